/* The fleet board: live drivers from /ws/fleet, routes and stops from /v1/fleet/plan, KPIs,
   ranked exceptions and the job list with reassignment.

   Drivers are circle markers on ONE canvas renderer: a positions frame moves the markers that
   changed (setLatLng) and Leaflet repaints the canvas once in the next animation frame, so
   1,000 drivers at 1 Hz cost one paint per second rather than 1,000 SVG nodes restyled.
   Routes and stops are few and styled by CSS class, so they stay SVG.

   window.fleetBoard exposes what tests and curious engineers want: frames handled, the last
   frame's sequence number, and per-frame handling / paint times (ms, performance.now()). */
"use strict";

(function () {
  const el = document.querySelector("[data-fleet]");
  if (!el) return;
  const cfg = JSON.parse(document.getElementById("fleet-config").textContent);
  const $ = (sel) => el.querySelector(sel);

  // Twelve colours that stay apart on the plain base; a driver keeps its colour for the session.
  const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2",
                   "#c026d3", "#65a30d", "#b45309", "#4f46e5", "#db2777", "#0f766e"];
  const STALE = "#9aa4b1";
  const REASSIGNABLE = new Set(["created", "planned", "assigned"]);
  const JOBS_SHOWN = 200;

  const stats = { frames: 0, lastSeq: null, drivers: 0, handleMs: [], paintMs: [], snapshots: 0 };
  window.fleetBoard = stats;
  stats.ids = () => [...state.markers.keys()];
  stats.plan = () => state.plan;

  const state = {
    markers: new Map(), // driver id -> {marker, ts, stale}
    names: new Map(), // driver id -> display name
    jobs: [],
    plan: null,
    fitted: false,
  };

  /** Serena.api that answers {ok: false, status: 0} instead of throwing when the network is down. */
  async function api(path, options) {
    try {
      return await Serena.api(path, options);
    } catch (_) {
      return { ok: false, status: 0, data: null, headers: new Headers() };
    }
  }

  function colour(driverId) {
    return PALETTE[Math.abs(Number(driverId)) % PALETTE.length];
  }
  function driverName(id) {
    return state.names.get(Number(id)) || "Driver " + id;
  }
  function text(tag, className, value) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (value !== undefined && value !== null) node.textContent = String(value);
    return node;
  }
  function hhmm(iso) {
    if (!iso) return "–";
    const d = new Date(iso);
    return isNaN(d) ? "–" : d.toISOString().slice(11, 16);
  }

  // --- the map ------------------------------------------------------------------------------------------

  const map = L.map("fleet-map", { zoomSnap: 0.25, preferCanvas: false });
  map.attributionControl.setPrefix("Leaflet");
  if (cfg.tile_url) L.tileLayer(cfg.tile_url, { maxZoom: 19 }).addTo(map);
  L.control.scale({ imperial: false }).addTo(map);
  map.setView([0, 0], 2);

  // Drivers on their own pane above routes and stops (z-index set through the CSSOM: the CSP forbids style attributes).
  map.createPane("drivers").style.zIndex = "450";
  const driverRenderer = L.canvas({ padding: 0.3, tolerance: 3, pane: "drivers" });
  const routeLayer = L.layerGroup().addTo(map);
  const stopLayer = L.layerGroup().addTo(map);
  const driverLayer = L.layerGroup().addTo(map);
  L.control.layers(null, { Routes: routeLayer, Stops: stopLayer, Drivers: driverLayer }, { collapsed: true }).addTo(map);
  document.getElementById("fleet-map").dataset.ready = "true";

  function fitAll() {
    const bounds = L.latLngBounds([]);
    routeLayer.eachLayer((l) => bounds.extend(l.getBounds()));
    state.markers.forEach((m) => bounds.extend(m.marker.getLatLng()));
    if (bounds.isValid()) map.fitBounds(bounds, { padding: [30, 30], maxZoom: 15 });
  }
  const FitControl = L.Control.extend({
    options: { position: "topleft" },
    onAdd: function () {
      const b = L.DomUtil.create("button", "fleet-fit");
      b.type = "button";
      b.textContent = "Whole fleet";
      b.title = "Zoom to every driver and route";
      L.DomEvent.disableClickPropagation(b);
      L.DomEvent.on(b, "click", fitAll);
      return b;
    },
  });
  new FitControl().addTo(map);

  function fitOnce() {
    if (state.fitted || el.dataset.loaded !== "true") return; // the plan first: routes frame the view
    const bounds = L.latLngBounds([]);
    routeLayer.eachLayer((l) => bounds.extend(l.getBounds()));
    if (!bounds.isValid() || state.markers.size <= 50) state.markers.forEach((m) => bounds.extend(m.marker.getLatLng()));
    if (bounds.isValid()) {
      map.fitBounds(bounds, { padding: [30, 30], maxZoom: 15 });
      state.fitted = true;
    }
  }

  // --- drivers (from the feed) ----------------------------------------------------------------------------

  function driverTip(id) {
    const e = state.markers.get(id);
    if (!e) return driverName(id);
    const age = Math.max(0, Math.round(Date.now() / 1000 - e.ts));
    const speed = e.speed === null || e.speed === undefined ? "" : " · " + Math.round(e.speed * 3.6) + " km/h";
    return driverName(id) + speed + " · " + (age < 90 ? age + " s ago" : Math.round(age / 60) + " min ago");
  }

  function applyDrivers(cols, nowS) {
    const ids = cols.id, lat = cols.lat, lng = cols.lng, ts = cols.ts;
    const staleAfter = cfg.stale_after_s;
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      let entry = state.markers.get(id);
      const stale = nowS - ts[i] > staleAfter;
      if (!entry) {
        const marker = L.circleMarker([lat[i], lng[i]], {
          renderer: driverRenderer, radius: 6, weight: 2, color: "#ffffff", opacity: 1,
          fillColor: stale ? STALE : colour(id), fillOpacity: 1,
        });
        marker.bindTooltip(function () { return driverTip(id); });
        // Clicking a driver narrows the job list to theirs.
        marker.on("click", function () {
          $("[data-job-filter]").value = driverName(id);
          renderJobs();
        });
        marker.addTo(driverLayer);
        entry = { marker, ts: ts[i], speed: cols.speed[i], stale };
        state.markers.set(id, entry);
      } else {
        entry.marker.setLatLng([lat[i], lng[i]]);
        entry.ts = ts[i];
        entry.speed = cols.speed[i];
        if (entry.stale !== stale) {
          entry.marker.setStyle({ fillColor: stale ? STALE : colour(id) });
          entry.stale = stale;
        }
      }
    }
  }

  function greyStaleDrivers(nowS) {
    state.markers.forEach(function (entry, id) {
      const stale = nowS - entry.ts > cfg.stale_after_s;
      if (stale && !entry.stale) {
        entry.marker.setStyle({ fillColor: STALE });
        entry.stale = true;
      }
    });
  }

  function onFrame(raw) {
    const t0 = performance.now();
    const msg = JSON.parse(raw);
    if (msg.type === "snapshot" || msg.type === "positions") {
      if (msg.type === "snapshot") stats.snapshots += 1;
      applyDrivers(msg.drivers, msg.at);
      if (stats.frames % 10 === 0) greyStaleDrivers(msg.at);
      stats.frames += 1;
      stats.lastSeq = msg.seq;
      stats.drivers = state.markers.size;
      const handled = performance.now() - t0;
      stats.handleMs.push(handled);
      if (stats.handleMs.length > 600) stats.handleMs.shift();
      // Registered after Leaflet's own redraw request, so this runs once the canvas is painted.
      requestAnimationFrame(function () {
        const painted = performance.now() - t0;
        stats.paintMs.push(painted);
        if (stats.paintMs.length > 600) stats.paintMs.shift();
        $("[data-frame-seq]").textContent = String(msg.seq);
        $("[data-frame-ms]").textContent = painted.toFixed(1);
        $("[data-driver-count]").textContent = String(state.markers.size);
        el.dataset.frameSeq = String(msg.seq);
      });
      if (!state.fitted && msg.type === "snapshot") fitOnce();
    } else if (msg.type === "changed") {
      refresh(msg.what || []);
    }
  }

  // --- the feed connection ------------------------------------------------------------------------------------

  let socket = null;
  let retryMs = 1000;

  function setStatus(label, live) {
    $("[data-feed-status]").textContent = label;
    $("[data-feed-dot]").classList.toggle("is-live", Boolean(live));
    el.dataset.feed = live ? "live" : "down";
  }

  function showSignin(reason) {
    const box = $("[data-signin]");
    if (reason) box.querySelector("[data-signin-text]").textContent = reason;
    box.hidden = false;
    setStatus("Not signed in", false);
  }

  function connect() {
    const s = Serena.session();
    if (!s || !s.access_token) {
      showSignin();
      return;
    }
    socket = new WebSocket(Serena.wsUrl(cfg.ws_path));
    socket.addEventListener("open", function () {
      const current = Serena.session();
      socket.send(JSON.stringify({ type: "auth", access_token: current ? current.access_token : "" }));
    });
    socket.addEventListener("message", function (ev) {
      if (typeof ev.data !== "string") return;
      if (ev.data.indexOf('"type":"hello"') !== -1) {
        setStatus("Live", true);
        retryMs = 1000;
        return;
      }
      onFrame(ev.data);
    });
    socket.addEventListener("close", async function (ev) {
      socket = null;
      setStatus("Reconnecting…", false);
      if (ev.code === 4403) {
        showSignin("The fleet board needs a dispatcher sign-in with the authenticator code (" + ev.reason + ").");
        return;
      }
      if (ev.code === 4401) {
        // Expired: any API call rotates the refresh token (Serena.api); then reconnect at once.
        const r = await api("/v1/fleet/kpis");
        if (!r.ok) {
          showSignin();
          return;
        }
        connect();
        return;
      }
      setTimeout(connect, retryMs);
      retryMs = Math.min(retryMs * 2, 15000);
    });
  }

  // --- plan, jobs, KPIs, exceptions (HTTP, refreshed on "changed") ------------------------------------------

  async function load(path) {
    const r = await api(path);
    if (r.status === 401 || r.status === 403) {
      showSignin(r.status === 403 ? "The fleet board needs a dispatcher account (" + Serena.errorText(r) + ")." : null);
      return null;
    }
    return r.ok ? r.data : null;
  }

  function renderKpis(k) {
    const fmt = {
      on_time_pct: (v) => (v === null ? "–" : v + " %"),
      utilisation_pct: (v) => (v === null ? "–" : v + " %"),
    };
    el.querySelectorAll("[data-kpi]").forEach(function (dd) {
      const key = dd.dataset.kpi;
      const v = k[key];
      dd.textContent = fmt[key] ? fmt[key](v === undefined ? null : v) : v === undefined || v === null ? "–" : String(v);
    });
  }

  function renderExceptions(rows) {
    const list = $("[data-exceptions]");
    list.replaceChildren();
    for (const e of rows) {
      const li = text("li", "exception");
      li.dataset.exceptionKind = e.kind;
      const head = text("div", "exception-head");
      const risk = Math.round((e.risk || 0) * 100);
      head.append(text("span", "badge " + (risk >= 50 ? "badge-bad" : "badge-pending"), e.kind.replace(/_/g, " ")),
                  text("span", "exception-risk small muted", "risk " + risk + " %"));
      li.append(head);
      if (e.detail) li.append(text("p", "exception-detail small", e.detail));
      if (e.suggested_action) {
        const act = text("p", "exception-action small");
        act.append(text("strong", null, "Suggested: "), document.createTextNode(e.suggested_action));
        li.append(act);
      }
      if (e.driver_id !== null && e.driver_id !== undefined && state.markers.has(e.driver_id)) {
        const show = text("button", "button button-ghost button-small", "Show " + driverName(e.driver_id));
        show.type = "button";
        show.addEventListener("click", () => map.setView(state.markers.get(e.driver_id).marker.getLatLng(), Math.max(map.getZoom(), 15)));
        li.append(show);
      }
      list.append(li);
    }
    $("[data-exception-count]").textContent = String(rows.length);
    $("[data-no-exceptions]").hidden = rows.length > 0;
  }

  function renderPlan(plan) {
    state.plan = plan;
    routeLayer.clearLayers();
    stopLayer.clearLayers();
    $("[data-plan-version]").textContent = plan && plan.version ? "plan v" + plan.version : "no plan yet";
    el.dataset.planVersion = plan && plan.version ? String(plan.version) : "";
    if (!plan || !plan.routes) return;
    const jobState = new Map(state.jobs.map((j) => [j.id, j.state]));
    for (const [driverId, stops] of Object.entries(plan.routes)) {
      if (!stops.length) continue;
      const c = colour(driverId);
      const line = L.polyline(stops.map((s) => [s.lat, s.lng]), { color: c, weight: 4, opacity: 0.85, className: "fleet-route" });
      line.bindTooltip(driverName(driverId) + " · " + stops.length + " stops");
      line.feature = { driverId: Number(driverId) };
      routeLayer.addLayer(line);
      for (const s of stops) {
        const st = (s.job_id && jobState.get(s.job_id)) || s.state;
        const m = L.circleMarker([s.lat, s.lng], {
          radius: s.kind === "delivery" ? 6 : 5, color: c, weight: 3, fillOpacity: 1,
          className: "fleet-stop stop-" + s.kind + " state-" + st,
        });
        // A "depot" stop starts a wave: the van loads the listed parcels (the planner's wave model).
        const label = s.kind === "depot" ? "Depot: load " + (s.load ? s.load.length : 0) + " parcels"
          : (s.kind === "pickup" ? "Pickup " : "Drop-off ") + s.package_code + " · " + st.replace(/_/g, " ");
        m.bindTooltip(driverName(driverId) + " · " + label + " · ETA " + hhmm(s.eta) +
                      (s.address && s.kind === "delivery" ? " · " + s.address : ""));
        stopLayer.addLayer(m);
      }
    }
  }

  function renderJobs() {
    const filter = $("[data-job-filter]").value.trim().toLowerCase();
    const list = $("[data-jobs]");
    list.replaceChildren();
    const rows = state.jobs.filter(function (j) {
      if (!filter) return true;
      const who = j.driver_id ? driverName(j.driver_id).toLowerCase() : "unassigned";
      return j.package_code.toLowerCase().includes(filter) || j.state.includes(filter) || who.includes(filter);
    });
    for (const j of rows.slice(0, JOBS_SHOWN)) {
      const li = text("li", "job");
      li.dataset.jobId = j.id;
      li.dataset.driverId = j.driver_id === null ? "" : String(j.driver_id);
      const sw = text("span", "job-swatch");
      sw.setAttribute("aria-hidden", "true");
      if (j.driver_id !== null) sw.dataset.colour = colour(j.driver_id);
      const main = text("div", "job-main");
      const top = text("div", "job-top");
      top.append(text("code", "job-code", j.package_code), text("span", "badge badge-muted job-state", j.state.replace(/_/g, " ")));
      const who = j.driver_id === null ? (j.state_reason || "unassigned")
        : driverName(j.driver_id) + (j.sequence !== null ? " · stop " + j.sequence : "") + " · ETA " + hhmm(j.eta);
      main.append(top, text("div", "job-who small muted", who));
      li.append(sw, main);
      if (REASSIGNABLE.has(j.state)) {
        const b = text("button", "button button-small job-reassign", "Reassign");
        b.type = "button";
        b.setAttribute("aria-label", "Reassign " + j.package_code);
        b.addEventListener("click", () => openReassign(j));
        li.append(b);
      }
      list.append(li);
    }
    // Canvas-free swatches: the colour is set through the CSSOM (allowed by the CSP), not a style attribute.
    list.querySelectorAll("[data-colour]").forEach((n) => { n.style.backgroundColor = n.dataset.colour; });
    $("[data-job-count]").textContent = String(state.jobs.length);
    const more = $("[data-jobs-more]");
    more.hidden = rows.length <= JOBS_SHOWN;
    more.textContent = rows.length > JOBS_SHOWN ? (rows.length - JOBS_SHOWN) + " more — narrow the filter" : "";
  }

  // A busy fleet changes jobs every second; refetching the job list that often for every open
  // board would load the API for nothing a person can read. Changes arriving meanwhile are
  // merged into the next refresh, at most one every MIN_REFRESH_MS.
  const MIN_REFRESH_MS = 2000;
  let lastRefresh = 0;
  const pending = new Set();
  let refreshing = null;
  async function refresh(what) {
    what.forEach((w) => pending.add(w));
    if (refreshing) return refreshing;
    refreshing = (async function () {
      while (pending.size) {
        const wait = lastRefresh + MIN_REFRESH_MS - Date.now();
        if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
        lastRefresh = Date.now();
        const now = new Set(pending);
        pending.clear();
        const tasks = [];
        if (now.has("drivers")) tasks.push(load("/v1/admin/drivers").then((d) => {
          if (d) d.forEach((x) => state.names.set(x.id, x.display_name || "Driver " + x.id));
          fillDriverSelect();
        }));
        if (now.has("plan") || now.has("kpis")) tasks.push(load("/v1/fleet/jobs").then((d) => { if (d) state.jobs = d; }));
        if (now.has("kpis")) tasks.push(load("/v1/fleet/kpis").then((d) => { if (d) renderKpis(d); }));
        if (now.has("exceptions")) tasks.push(load("/v1/fleet/exceptions").then((d) => { if (d) renderExceptions(d); }));
        const planTask = now.has("plan") ? load("/v1/fleet/plan") : null;
        await Promise.all(tasks);
        if (planTask) renderPlan(await planTask);
        else if (now.has("kpis") && state.plan) renderPlan(state.plan); // stop states follow the jobs
        renderJobs();
      }
      el.dataset.loaded = "true";
      fitOnce();
    })();
    try { await refreshing; } finally { refreshing = null; }
  }

  // --- reassignment ------------------------------------------------------------------------------------------

  const form = $("[data-reassign-form]");
  let reassigning = null;

  function fillDriverSelect() {
    const select = $("[data-reassign-driver]");
    const chosen = select.value;
    select.replaceChildren();
    const ids = new Set([...state.names.keys()]);
    if (state.plan && state.plan.routes) Object.keys(state.plan.routes).forEach((d) => ids.add(Number(d)));
    [...ids].sort((a, b) => a - b).forEach(function (id) {
      const o = text("option", null, driverName(id) + (state.markers.has(id) ? " (live)" : ""));
      o.value = String(id);
      select.append(o);
    });
    if (chosen) select.value = chosen;
  }

  function openReassign(job) {
    reassigning = job;
    fillDriverSelect();
    form.querySelector("[data-reassign-code]").textContent = job.package_code;
    form.querySelector("[data-reassign-error]").hidden = true;
    form.hidden = false;
    form.parentElement.scrollTop = 0; // the form sits at the top of the side panel
    form.querySelector("[data-reassign-driver]").focus();
  }

  form.addEventListener("submit", async function (ev) {
    ev.preventDefault();
    if (!reassigning) return;
    const submit = form.querySelector("[data-reassign-submit]");
    const err = form.querySelector("[data-reassign-error]");
    submit.disabled = true;
    const body = { driver_id: Number(form.driver_id.value), reason: form.reason.value.trim() || "Reassigned on the fleet board" };
    const r = await api("/v1/fleet/jobs/" + reassigning.id + "/reassign", { method: "POST", body });
    submit.disabled = false;
    if (!r.ok) {
      err.textContent = Serena.errorText(r);
      err.hidden = false;
      return;
    }
    form.hidden = true;
    el.dataset.reassigned = reassigning.id;
    reassigning = null;
    await refresh(["plan", "kpis"]); // the planner re-plans around it; its new plan arrives as a "changed" frame
  });
  form.querySelector("[data-reassign-cancel]").addEventListener("click", function () {
    form.hidden = true;
    reassigning = null;
  });
  $("[data-job-filter]").addEventListener("input", renderJobs);

  // --- start --------------------------------------------------------------------------------------------------

  if (!Serena.session()) {
    showSignin();
    return;
  }
  refresh(["drivers", "plan", "kpis", "exceptions"]);
  connect();
  setInterval(() => refresh(["kpis"]), 30000); // on-time % and utilisation drift with the clock too
})();
