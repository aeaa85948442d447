/* The driver app: sign in, start the shift, work the stops in order (navigate, scan, proof or
   failure), and stream the phone's position.

   Location: every fix from navigator.geolocation.watchPosition becomes a ping {seq, ts, lat,
   lng, accuracy_m, speed_mps, heading_deg} that is FIRST written to IndexedDB and only then
   sent; it leaves IndexedDB when the server says it is stored (accepted or duplicate) or
   refused for good (rejected, counted on the server with its reason). So a fix is never lost
   to a dead network, a closed tab or a crash. Sending, always oldest first (one pump at a time):
   fixes made while /ws/driver is live (signed in with its first message and answered
   {type: "ready"}) go over that socket, one frame per batch, answered after the server stored
   them; everything else — the backlog of fixes made offline or while the socket was down —
   goes in chunks to POST /v1/tracking/me/pings, before any newer fix. "Made while live" is a
   seq threshold taken when the socket turns live, so a reconnect first drains the backlog over
   HTTP, in order, and only then streams again. A socket that drops is reopened with back-off
   (1 s, doubling to 30 s; after a refused token, once the token was refreshed).
   seq is max(last seq + 1, Date.now() in ms): increasing, and unique per driver even after the
   app's storage was wiped (tracking de-duplicates on (driver, seq)).

   window.driverApp exposes the buffer and counters for tests. */
"use strict";

(function () {
  const app = document.querySelector("[data-driver-app]");
  if (!app) return;
  const cfg = JSON.parse(document.getElementById("driver-config").textContent);
  const $ = (sel) => app.querySelector(sel);
  const CHUNK = 500; // pings per upload
  const SEQ_KEY = "serena.driver.seq";
  const DUTY_KEY = "serena.driver.on_duty";
  const DONE_STATES = new Set(["delivered", "failed", "returned", "cancelled"]);

  const state = {
    tasks: null, // the last task list document
    localState: new Map(), // job id -> state after this device's scans / proofs (newer than the task list)
    current: null, // the stop on screen
    fix: null, // newest position
    watchId: null,
  };
  const debug = { sent_ws: 0, sent_http: 0, acked: 0, rejected: 0, uploads: [], frames: [], fixes: [], sockets: 0 };
  window.driverApp = debug;
  debug.fix = () => state.fix;

  // --- small helpers -------------------------------------------------------------------------------------
  /** Serena.api that answers {ok: false, status: 0} instead of throwing when the network is down. */
  async function api(path, options) {
    try {
      return await Serena.api(path, options);
    } catch (_) {
      return { ok: false, status: 0, data: null, headers: new Headers() };
    }
  }


  function text(tag, className, value) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (value !== undefined && value !== null) node.textContent = String(value);
    return node;
  }
  function hhmm(iso) {
    const d = new Date(iso);
    return isNaN(d) ? "" : d.toISOString().slice(11, 16);
  }
  function showError(message) {
    const box = $("[data-app-error]");
    box.textContent = message || "";
    box.hidden = !message;
  }
  function show(view) {
    for (const name of ["signin", "shift", "tasks", "stop"]) {
      $("[data-view-" + name + "]").hidden = name !== view;
    }
    app.dataset.view = view;
    showError("");
  }

  // --- IndexedDB: the ping buffer ---------------------------------------------------------------------------

  let dbPromise = null;
  function db() {
    if (!dbPromise) {
      dbPromise = new Promise(function (resolve, reject) {
        const req = indexedDB.open("serena-driver", 1);
        req.onupgradeneeded = () => req.result.createObjectStore("pings", { keyPath: "seq" });
        req.onsuccess = () => resolve(req.result);
        req.onerror = () => reject(req.error);
      });
    }
    return dbPromise;
  }
  async function tx(mode, fn) {
    const d = await db();
    return new Promise(function (resolve, reject) {
      const t = d.transaction("pings", mode);
      const result = fn(t.objectStore("pings"));
      t.oncomplete = () => resolve(result && "result" in result ? result.result : undefined);
      t.onerror = () => reject(t.error);
      t.onabort = () => reject(t.error);
    });
  }
  const buffer = {
    put: (ping) => tx("readwrite", (s) => s.put(ping)),
    oldest: (n) => tx("readonly", (s) => s.getAll(null, n)), // keys ascend: oldest seq first
    count: () => tx("readonly", (s) => s.count()),
    remove: (seqs) => tx("readwrite", (s) => { seqs.forEach((q) => s.delete(q)); }),
  };
  debug.buffer = buffer;

  async function showBuffered() {
    const n = await buffer.count();
    $("[data-buffered]").textContent = n + " buffered";
    app.dataset.buffered = String(n);
  }

  function nextSeq() {
    const last = Number(localStorage.getItem(SEQ_KEY) || 0);
    const seq = Math.max(last + 1, Date.now());
    localStorage.setItem(SEQ_KEY, String(seq));
    return seq;
  }

  // --- the location stream ------------------------------------------------------------------------------------

  let socket = null;
  let socketLive = false; // the server answered {type: "ready"} on this socket: it took our token
  let liveFrom = Infinity; // fixes with seq >= this were made while the socket was live: they may go over it
  let socketRetry = null;
  let retryMs = 1000; // next reconnect delay; doubles per failed attempt, back to 1 s once live
  const RETRY_MAX_MS = 30000;
  let waiting = null; // {resolve} of the frame awaiting its answer
  let pumping = false;

  function setLink(label) {
    $("[data-link]").textContent = label;
    app.dataset.link = label;
  }

  function scheduleReconnect() {
    clearTimeout(socketRetry);
    socketRetry = setTimeout(openSocket, retryMs);
    retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
  }

  function openSocket() {
    clearTimeout(socketRetry);
    if (socket || !navigator.onLine || !onDuty()) return;
    const s = Serena.session();
    if (!s || !s.access_token) return;
    const ws = new WebSocket(Serena.wsUrl(cfg.ws_path));
    socket = ws;
    ws.addEventListener("open", function () {
      // Browsers cannot set an Authorization header on a WebSocket: the token goes in the first message (docs/web.md).
      ws.send(JSON.stringify({ type: "auth", access_token: Serena.session().access_token }));
    });
    ws.addEventListener("message", function (ev) {
      let msg = null;
      try { msg = JSON.parse(ev.data); } catch (_) { return; }
      if (msg && msg.type === "ready" && socket === ws) {
        socketLive = true;
        liveFrom = Math.max(Number(localStorage.getItem(SEQ_KEY) || 0) + 1, Date.now()); // >= every later nextSeq()
        retryMs = 1000;
        debug.sockets += 1;
        setLink("live");
        pump(); // the backlog first (over HTTP), then whatever is made from now on streams here
      } else if (msg && Array.isArray(msg.accepted)) {
        if (waiting) { const w = waiting; waiting = null; w.resolve(msg); }
      }
    });
    ws.addEventListener("close", function (ev) {
      if (socket !== ws && socket !== null) return; // an older socket: a newer one has taken over
      socket = null;
      socketLive = false;
      liveFrom = Infinity;
      if (waiting) { const w = waiting; waiting = null; w.resolve(null); }
      setLink(navigator.onLine ? "online" : "offline");
      if (!onDuty() || !navigator.onLine) return; // ended shift / offline: the shift button or the online event reopens it
      if (ev.code === 4401) {
        // The token was refused (expired): a JSON call refreshes the session, then try again.
        api("/v1/me").then(scheduleReconnect);
      } else {
        scheduleReconnect();
      }
    });
  }

  function closeSocket() {
    clearTimeout(socketRetry);
    if (socket) {
      const ws = socket;
      socket = null;
      socketLive = false;
      liveFrom = Infinity;
      ws.close();
    }
  }

  function sendOnSocket(pings) {
    return new Promise(function (resolve) {
      waiting = { resolve };
      try {
        socket.send(JSON.stringify(pings));
        debug.sent_ws += pings.length;
        debug.frames.push(pings.map((p) => p.seq));
      } catch (_) {
        waiting = null;
        resolve(null);
        return;
      }
      setTimeout(function () { if (waiting && waiting.resolve === resolve) { waiting = null; resolve(null); } }, 10000);
    });
  }

  async function sendOverHttp(pings) {
    const r = await api(cfg.pings_path, { method: "POST", body: pings });
    if (!r.ok) return null;
    debug.sent_http += pings.length;
    debug.uploads.push(pings.map((p) => p.seq));
    const out = { accepted: [], duplicates: [], rejected: [] };
    for (const row of r.data.results || []) {
      if (row.status === "accepted") out.accepted.push(row.seq);
      else if (row.status === "duplicate") out.duplicates.push(row.seq);
      else out.rejected.push({ seq: row.seq, reason: row.reason });
    }
    return out;
  }

  /** Send the buffer, oldest first, one chunk at a time, until it is empty or the network fails. */
  async function pump() {
    if (pumping || !navigator.onLine || !Serena.session()) return;
    pumping = true;
    try {
      for (;;) {
        let pings = await buffer.oldest(CHUNK);
        if (!pings.length) break;
        // Oldest first: fixes from before the socket turned live (the backlog) go over HTTP; once
        // they are stored, the live ones go over the socket.
        const live = socketLive && socket && socket.readyState === WebSocket.OPEN;
        const viaSocket = live && pings[0].seq >= liveFrom;
        if (live && !viaSocket) pings = pings.filter((p) => p.seq < liveFrom);
        const answer = viaSocket ? await sendOnSocket(pings) : await sendOverHttp(pings);
        if (!answer) {
          if (viaSocket) { closeSocket(); continue; } // no answer: HTTP now; the close handler reconnects later
          break; // HTTP failed too: keep everything, try again on the next fix / online event
        }
        const done = answer.accepted.concat(answer.duplicates, answer.rejected.map((r) => r.seq)).filter((q) => q !== null);
        debug.acked += answer.accepted.length + answer.duplicates.length;
        debug.rejected += answer.rejected.length;
        if (!done.length) break; // nothing recognised: do not spin
        await buffer.remove(done);
      }
    } catch (err) {
      console.warn("location upload paused:", err);
    } finally {
      pumping = false;
      await showBuffered();
    }
  }

  async function onPosition(pos) {
    const c = pos.coords;
    state.fix = { lat: c.latitude, lng: c.longitude, accuracy_m: c.accuracy };
    $("[data-gps]").textContent = "GPS ±" + Math.round(c.accuracy) + " m";
    app.dataset.gps = "fix";
    if (!onDuty()) return;
    const ping = {
      seq: nextSeq(), ts: (pos.timestamp || Date.now()) / 1000, lat: c.latitude, lng: c.longitude,
      accuracy_m: c.accuracy, speed_mps: c.speed === null || isNaN(c.speed) ? null : c.speed,
      heading_deg: c.heading === null || isNaN(c.heading) ? null : c.heading,
    };
    await buffer.put(ping);
    debug.fixes.push(ping.seq);
    await showBuffered();
    pump();
  }

  function startGps() {
    if (state.watchId !== null || !("geolocation" in navigator)) return;
    state.watchId = navigator.geolocation.watchPosition(onPosition, function (err) {
      $("[data-gps]").textContent = "GPS: " + (err.code === 1 ? "permission denied" : "no fix");
    }, { enableHighAccuracy: true, maximumAge: 0, timeout: 30000 });
  }

  window.addEventListener("online", function () {
    setLink("online");
    pump().then(openSocket); // the backlog goes over HTTP in order, then the live socket reopens
  });
  window.addEventListener("offline", function () {
    setLink("offline");
    closeSocket(); // a socket may outlive the network for minutes; fixes go to the buffer meanwhile
  });
  setInterval(pump, 5000); // retries, and the path when the socket is not available

  // --- shift ----------------------------------------------------------------------------------------------------

  function onDuty() { return sessionStorage.getItem(DUTY_KEY) === "1"; }

  $("[data-shift-start]").addEventListener("click", async function () {
    const body = state.fix ? { lat: state.fix.lat, lng: state.fix.lng } : {};
    const r = await api("/v1/driver/shift/start", { method: "POST", body });
    if (!r.ok) return showError(Serena.errorText(r));
    sessionStorage.setItem(DUTY_KEY, "1");
    openSocket();
    await loadTasks(true);
    show("tasks");
  });

  $("[data-shift-end]").addEventListener("click", async function () {
    await pump();
    const r = await api("/v1/driver/shift/end", { method: "POST" });
    if (!r.ok && r.status !== 409) return showError(Serena.errorText(r));
    sessionStorage.removeItem(DUTY_KEY);
    sessionStorage.removeItem(TASKS_KEY);
    closeSocket();
    show("shift");
  });

  // --- tasks --------------------------------------------------------------------------------------------------

  // The planner's wave model: a "depot" stop lists the parcels to load (`load`, package codes);
  // each is loaded with a pickup scan. Other stops are one job each ("delivery"; "pickup" in
  // older plans). Local states (from this device's scan / proof answers) win over the list's.
  const UNLOADED = new Set(["created", "planned", "assigned"]);
  function jobState(jobId, fallback) { return state.localState.get(jobId) || fallback; }
  function codeState(code) {
    const stops = (state.tasks && state.tasks.stops) || [];
    const s = stops.find((x) => x.package_code === code && x.job_id);
    return s ? jobState(s.job_id, s.state) : state.localState.get("code:" + code) || "assigned";
  }
  function toLoad(s) { return (s.load || []).filter((code) => UNLOADED.has(codeState(code))); }
  function stopState(s) {
    if (s.kind === "depot") return toLoad(s).length ? "to load" : "loaded";
    return jobState(s.job_id, s.state);
  }
  function stopDone(s) {
    const st = stopState(s);
    if (s.kind === "depot") return st === "loaded";
    if (s.kind === "pickup") return !UNLOADED.has(st);
    return DONE_STATES.has(st);
  }
  // What a driver needs to know of a job state (the list carries the state at planning time).
  const LABELS = { created: "planned", planned: "planned", assigned: "planned", picked_up: "on board",
                   out_for_delivery: "on board", arriving: "at the door" };
  function stateLabel(s) { const st = stopState(s); return LABELS[st] || st.replace(/_/g, " "); }
  function stopTitle(s) {
    const n = (s.load || []).length;
    if (s.kind === "depot") return "Load " + n + (n === 1 ? " parcel" : " parcels") + " at the depot";
    return (s.kind === "pickup" ? "Pick up " : "Deliver ") + s.package_code;
  }

  async function loadTasks(force) {
    const r = await api("/v1/driver/tasks");
    if (!r.ok) {
      if (r.status === 401 || r.status === 403) { Serena.clearSession(); show("signin"); }
      return;
    }
    const doc = r.data;
    const changed = !state.tasks || state.tasks.version !== doc.version;
    if (changed || force) {
      state.tasks = doc;
      if (changed) state.localState.clear();
      renderTasks();
      saveTasks();
      if (doc.version) await api("/v1/driver/tasks/ack", { method: "POST", body: { version: doc.version } });
    }
  }

  // The last task list and this device's progress on it, so the app reopened offline (the
  // service worker serves the shell) still shows the day's stops.
  const TASKS_KEY = "serena.driver.tasks";
  function saveTasks() {
    try {
      sessionStorage.setItem(TASKS_KEY, JSON.stringify({ doc: state.tasks, local: [...state.localState] }));
    } catch (_) { /* storage full: the network copy is the source anyway */ }
  }
  function restoreTasks() {
    try {
      const saved = JSON.parse(sessionStorage.getItem(TASKS_KEY));
      if (!saved || !saved.doc) return false;
      state.tasks = saved.doc;
      state.localState = new Map(saved.local || []);
      renderTasks();
      return true;
    } catch (_) {
      return false;
    }
  }

  function renderTasks() {
    const doc = state.tasks || { stops: [] };
    const list = $("[data-stops]");
    list.replaceChildren();
    $("[data-task-version]").textContent = doc.version ? "list v" + doc.version : "";
    app.dataset.taskVersion = String(doc.version || 0);
    $("[data-no-tasks]").hidden = doc.stops.length > 0;
    let nextMarked = false;
    doc.stops.forEach(function (s) {
      const done = stopDone(s);
      const li = text("li", "stop" + (done ? " is-done" : ""));
      li.dataset.jobId = s.job_id || "";
      li.dataset.kind = s.kind;
      li.dataset.state = stopState(s);
      const b = text("button", "stop-open");
      b.type = "button";
      const title = text("span", "stop-title", stopTitle(s));
      const where = text("span", "stop-where small", s.kind === "delivery" ? (s.address || s.lat.toFixed(5) + ", " + s.lng.toFixed(5)) : "Depot");
      const when = text("span", "stop-when small muted", "ETA " + hhmm(s.eta) + (s.window_start ? " · window " + hhmm(s.window_start) + "–" + hhmm(s.window_end) : ""));
      const tone = ["failed", "returned", "cancelled"].includes(stopState(s)) ? "badge-bad" : done ? "badge-ok" : "badge-muted";
      const badge = text("span", "badge " + tone, stateLabel(s));
      if (!done && !nextMarked) { li.classList.add("is-next"); nextMarked = true; }
      b.append(title, where, when, badge);
      b.addEventListener("click", () => openStop(s));
      li.append(b);
      list.append(li);
    });
  }

  setInterval(function () { if (app.dataset.view === "tasks" && navigator.onLine) loadTasks(false); }, cfg.poll_tasks_s * 1000);

  // --- one stop -------------------------------------------------------------------------------------------------

  function openStop(s) {
    state.current = s;
    const delivery = s.kind === "delivery";
    $("[data-stop-title]").textContent = stopTitle(s);
    $("[data-stop-address]").textContent = delivery ? (s.address || "") + (s.recipient_name ? " · " + s.recipient_name : "") : "At the depot";
    $("[data-stop-meta]").textContent = "ETA " + hhmm(s.eta) + (s.window_start ? " · window " + hhmm(s.window_start) + "–" + hhmm(s.window_end) : "");
    // geo: opens the phone's own navigation app with just the coordinates: no map service, works offline.
    const nav = $("[data-stop-nav]");
    nav.href = "geo:" + s.lat + "," + s.lng + "?q=" + s.lat + "," + s.lng;
    nav.textContent = "Navigate (" + s.lat.toFixed(5) + ", " + s.lng.toFixed(5) + ")";
    $("[data-scan-form]").reset();
    $("[data-override]").hidden = true;
    clearSignature();
    renderStopStep();
    show("stop");
  }

  function renderLoadList() {
    const s = state.current;
    const list = $("[data-load-list]");
    list.replaceChildren();
    list.hidden = s.kind !== "depot";
    if (s.kind !== "depot") return;
    for (const code of s.load || []) {
      const loaded = !UNLOADED.has(codeState(code));
      const li = text("li", loaded ? "is-loaded" : "", (loaded ? "✓ " : "") + code);
      li.dataset.code = code;
      list.append(li);
    }
  }

  function renderStopStep() {
    const s = state.current;
    const st = stopState(s);
    const delivery = s.kind === "delivery";
    const done = stopDone(s);
    const needsProof = delivery && st === "arriving";
    renderLoadList();
    $("[data-step-scan]").hidden = done || needsProof;
    $("[data-step-proof]").hidden = !needsProof;
    $("[data-step-fail]").hidden = !delivery || done;
    const note = $("[data-stop-done]");
    note.hidden = !done;
    note.textContent = !done ? "" : s.kind === "depot" ? "All parcels loaded." : s.kind === "pickup" ? "Picked up."
      : st === "delivered" ? "Delivered. Thank you!" : "Marked: " + st.replace(/_/g, " ");
    app.dataset.stopState = st;
  }

  function setLocal(jobId, code, st) {
    state.localState.set(jobId, st);
    if (code) state.localState.set("code:" + code, st);
    saveTasks();
    renderTasks();
    renderStopStep();
  }

  $("[data-back]").addEventListener("click", function () {
    stopCamera();
    show("tasks");
    loadTasks(false);
  });

  // --- scanning -------------------------------------------------------------------------------------------------

  async function submitScan(code) {
    const s = state.current;
    if (!state.fix) return showError("Waiting for a GPS position before scanning.");
    const override = $("[data-override]");
    const body = { kind: s.kind === "delivery" ? "delivery" : "pickup", code: code.trim().toUpperCase(), lat: state.fix.lat, lng: state.fix.lng,
                   accuracy_m: Math.min(state.fix.accuracy_m || 10, 5000) };
    const reason = $("#scan-override").value.trim();
    if (!override.hidden && reason) body.override_reason = reason;
    const button = $("[data-scan-submit]");
    button.disabled = true;
    const r = await api("/v1/driver/scans", { method: "POST", body });
    button.disabled = false;
    if (!r.ok) {
      showError(Serena.errorText(r));
      if (r.status === 403 && /from the drop-off|geofence|away/i.test(Serena.errorText(r))) override.hidden = false;
      return;
    }
    showError("");
    $("[data-scan-form]").reset();
    setLocal(r.data.job_id, body.code, r.data.state);
    if (s.kind === "depot" && !stopDone(s)) $("#scan-code").focus(); // next parcel
  }

  $("[data-scan-form]").addEventListener("submit", function (ev) {
    ev.preventDefault();
    const code = ev.target.code.value;
    if (code.trim().length < 4) return showError("Type the code printed under the barcode.");
    submitScan(code);
  });

  let camera = null;
  async function startCamera() {
    if (!window.ZXingBrowser) return showError("The scanner did not load; type the code instead.");
    const box = $("[data-scanner]");
    box.hidden = false;
    try {
      const reader = new ZXingBrowser.BrowserMultiFormatReader();
      camera = await reader.decodeFromVideoDevice(undefined, $("[data-scanner-video]"), function (result, _err, controls) {
        if (result) {
          controls.stop();
          camera = null;
          box.hidden = true;
          $("#scan-code").value = result.getText();
          submitScan(result.getText());
        }
      });
    } catch (err) {
      box.hidden = true;
      camera = null;
      showError("The camera is not available (" + (err && err.name ? err.name : "error") + "); type the code instead.");
    }
  }
  function stopCamera() {
    if (camera) { camera.stop(); camera = null; }
    $("[data-scanner]").hidden = true;
  }
  $("[data-scan-camera]").addEventListener("click", startCamera);
  $("[data-scanner-stop]").addEventListener("click", stopCamera);

  // --- proof ----------------------------------------------------------------------------------------------------

  app.querySelectorAll("[data-proof-tab]").forEach(function (tab) {
    tab.addEventListener("click", function () {
      app.querySelectorAll("[data-proof-tab]").forEach((t) => t.setAttribute("aria-selected", String(t === tab)));
      app.querySelectorAll("[data-proof]").forEach((p) => { p.hidden = p.dataset.proof !== tab.dataset.proofTab; });
    });
  });

  const canvas = $("[data-signature]");
  const ctx = canvas.getContext("2d");
  let strokes = [];
  let drawing = null;
  function canvasPoint(ev) {
    const r = canvas.getBoundingClientRect();
    return [Math.round((ev.clientX - r.left) * canvas.width / r.width), Math.round((ev.clientY - r.top) * canvas.height / r.height)];
  }
  function clearSignature() {
    strokes = [];
    ctx.clearRect(0, 0, canvas.width, canvas.height);
  }
  canvas.addEventListener("pointerdown", function (ev) {
    canvas.setPointerCapture(ev.pointerId);
    drawing = [canvasPoint(ev)];
    strokes.push(drawing);
  });
  canvas.addEventListener("pointermove", function (ev) {
    if (!drawing) return;
    const p = canvasPoint(ev);
    const last = drawing[drawing.length - 1];
    drawing.push(p);
    ctx.lineWidth = 3;
    ctx.lineCap = "round";
    ctx.strokeStyle = "#17202a";
    ctx.beginPath();
    ctx.moveTo(last[0], last[1]);
    ctx.lineTo(p[0], p[1]);
    ctx.stroke();
  });
  ["pointerup", "pointercancel"].forEach((t) => canvas.addEventListener(t, () => { drawing = null; }));
  $("[data-signature-clear]").addEventListener("click", clearSignature);

  function signatureSvg() {
    const paths = strokes.filter((s) => s.length > 1)
      .map((s) => '<path d="M' + s.map((p) => p[0] + " " + p[1]).join(" L") + '"/>').join("");
    return '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ' + canvas.width + " " + canvas.height +
      '" fill="none" stroke="#000" stroke-width="3" stroke-linecap="round" stroke-linejoin="round">' + paths + "</svg>";
  }

  async function completed(r) {
    if (!r.ok) return showError(Serena.errorText(r));
    setLocal(state.current.job_id, state.current.package_code, r.data.state);
  }

  $("[data-signature-submit]").addEventListener("click", async function () {
    if (!strokes.some((s) => s.length > 1)) return showError("Ask the recipient to sign in the box.");
    const r = await api("/v1/driver/deliveries/" + state.current.job_id + "/proof",
      { method: "POST", body: { kind: "signature", signature_svg: signatureSvg() } });
    completed(r);
  });

  $("[data-otp-form]").addEventListener("submit", async function (ev) {
    ev.preventDefault();
    const otp = ev.target.otp.value.trim();
    if (!/^\d{4,8}$/.test(otp)) return showError("The code has 4 to 8 digits.");
    completed(await api("/v1/driver/deliveries/" + state.current.job_id + "/proof", { method: "POST", body: { kind: "otp", otp } }));
  });

  $("[data-photo]").addEventListener("change", async function (ev) {
    const file = ev.target.files && ev.target.files[0];
    if (!file) return;
    const send = async function () {
      const form = new FormData();
      form.append("photo", file, file.name || "proof.jpg");
      const s = Serena.session();
      return fetch(Serena.root + "/v1/driver/deliveries/" + state.current.job_id + "/photo", {
        method: "POST", body: form, headers: s ? { Authorization: "Bearer " + s.access_token } : {},
      });
    };
    let resp;
    try {
      resp = await send();
      if (resp.status === 401 && (await api("/v1/driver/tasks")).ok) resp = await send(); // Serena.api rotated the token
    } catch (_) {
      ev.target.value = "";
      return showError("The server could not be reached; take the photo again when you have a signal.");
    }
    let data = null;
    try { data = await resp.json(); } catch (_) { data = null; }
    ev.target.value = "";
    completed({ ok: resp.ok, status: resp.status, data, headers: resp.headers });
  });

  // --- failure ----------------------------------------------------------------------------------------------------

  $("[data-fail-form]").addEventListener("submit", async function (ev) {
    ev.preventDefault();
    const body = { reason: ev.target.reason.value, note: ev.target.note.value.trim() };
    if (state.fix) { body.lat = state.fix.lat; body.lng = state.fix.lng; }
    const r = await api("/v1/driver/deliveries/" + state.current.job_id + "/fail", { method: "POST", body });
    if (!r.ok) return showError(Serena.errorText(r));
    $("[data-step-fail]").open = false;
    setLocal(state.current.job_id, state.current.package_code, r.data.state);
  });

  // --- sign-in and start -------------------------------------------------------------------------------------------

  $("[data-signin-form]").addEventListener("submit", async function (ev) {
    ev.preventDefault();
    const email = ev.target.email.value.trim();
    const password = ev.target.password.value;
    if (!email || !password) return showError("Enter your e-mail and password.");
    const button = $("[data-signin-submit]");
    button.disabled = true;
    const r = await api("/v1/auth/login", { method: "POST", body: { email, password }, auth: false });
    button.disabled = false;
    if (!r.ok) return showError(Serena.errorText(r));
    Serena.saveSession(r.data);
    const me = await api("/v1/me");
    Serena.saveSession(null, me.ok ? me.data : { email, roles: [] });
    ev.target.password.value = "";
    await start();
  });

  async function start() {
    const s = Serena.session();
    if (!s || !s.access_token) return show("signin");
    const user = s.user || {};
    if (user.roles && !user.roles.includes("driver")) {
      show("signin");
      return showError("This account is not a driver account.");
    }
    $("[data-driver-name]").textContent = user.full_name || user.email || "driver";
    startGps();
    if (onDuty()) {
      openSocket();
      if (restoreTasks()) show("tasks");
      await loadTasks(true);
      show("tasks");
    } else {
      show("shift");
    }
    showBuffered();
    pump();
  }

  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.register(cfg.sw, { scope: cfg.scope }).then(function (reg) {
      app.dataset.sw = "registered";
      return reg;
    }).catch((err) => console.warn("service worker not registered:", err));
  }
  setLink(navigator.onLine ? "online" : "offline");
  start();
})();
