// Customer tracking page: live driver marker (animated between fixes), ETA window, status timeline.
(function () {
  "use strict";
  const cfg = JSON.parse(document.getElementById("track-config").textContent);
  const STEPS = ["scheduled", "on_the_way", "arriving", "arrived", "delivered"];
  const etaEl = document.querySelector("[data-eta]");
  const noteEl = document.querySelector("[data-position-note]");
  const connEl = document.querySelector("[data-connection]");
  const map = L.map("track-map", { zoomControl: true, attributionControl: !!cfg.tile_url });
  map.setView([0, 0], 2);
  if (cfg.tile_url) L.tileLayer(cfg.tile_url, { maxZoom: 19 }).addTo(map);

  let driver = null;      // L.circleMarker for an exact position
  let area = null;        // L.circle for a coarse position
  let anim = null;
  let fitted = false;
  let dest = null;        // the delivery address [lat, lng]

  function fmt(ts) {
    return new Date(ts * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function animateTo(marker, to, ms) {
    const from = marker.getLatLng();
    const start = performance.now();
    if (anim) cancelAnimationFrame(anim);
    function frame(now) {
      const t = Math.min(1, (now - start) / ms);
      const e = t < 0.5 ? 2 * t * t : -1 + (4 - 2 * t) * t;  // ease in-out
      marker.setLatLng([from.lat + (to[0] - from.lat) * e, from.lng + (to[1] - from.lng) * e]);
      if (t < 1) anim = requestAnimationFrame(frame);
    }
    anim = requestAnimationFrame(frame);
  }

  function show(state) {
    const i = STEPS.indexOf(state.status);
    document.querySelectorAll("[data-timeline] li").forEach(function (li, k) {
      li.classList.toggle("done", k < i);
      li.classList.toggle("current", k === i);
      if (k === i) li.setAttribute("aria-current", "step"); else li.removeAttribute("aria-current");
    });
    if (state.status === "delivered") etaEl.textContent = "Delivered";
    else if (state.status === "arrived") etaEl.textContent = "Your driver is at your door";
    else if (state.eta) etaEl.textContent = "Arriving between " + fmt(state.eta.earliest) + " and " + fmt(state.eta.latest);
    const pos = state.position;
    if (!pos) return;
    const ll = [pos.lat, pos.lng];
    if (pos.exact) {
      if (area) { map.removeLayer(area); area = null; }
      if (!driver) driver = L.circleMarker(ll, { radius: 9, color: "#fff", weight: 3, fillColor: "#2563eb", fillOpacity: 1 })
        .addTo(map).bindTooltip("Your driver");
      else animateTo(driver, ll, 900);
      noteEl.textContent = state.stops_before ? state.stops_before + " stop(s) before yours" : "You are the next stop";
    } else {
      if (driver) { map.removeLayer(driver); driver = null; }
      if (!area) area = L.circle(ll, { radius: 1200, color: "#2563eb", weight: 1, fillOpacity: 0.12 }).addTo(map);
      else area.setLatLng(ll);
      noteEl.textContent = "Approximate area — the exact position shows when the driver is " +
        "a few stops away" + (state.stops_before != null ? " (" + state.stops_before + " stops before yours)" : "") + ".";
    }
    if (!fitted) {
      if (dest) map.fitBounds(L.latLngBounds([ll, dest]).pad(0.35), { maxZoom: 16 });
      else map.setView(ll, 15);
      fitted = true;
    } else if (!map.getBounds().pad(-0.1).contains(ll)) {
      map.panTo(ll);
    }
  }

  fetch(cfg.map_url).then(function (r) { return r.ok ? r.json() : null; }).then(function (m) {
    if (!m) return;
    if (!cfg.tile_url && m.roads) L.geoJSON(m.roads, { style: { color: "#9aa4b1", weight: 3, opacity: 0.9 }, interactive: false }).addTo(map);
    if (m.destination) {
      dest = [m.destination.lat, m.destination.lng];
      L.circleMarker([m.destination.lat, m.destination.lng], { radius: 8, color: "#fff", weight: 3, fillColor: "#b45309", fillOpacity: 1 })
        .addTo(map).bindTooltip("Delivery address");
      if (!fitted) map.setView(dest, 15);
    }
  });
  fetch(cfg.state_url).then(function (r) { return r.ok ? r.json() : null; }).then(function (s) { if (s) show(s); });

  let backoff = 500;
  function connect() {
    const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + cfg.ws_path);
    ws.onopen = function () { connEl.textContent = "Live"; backoff = 500; document.body.dataset.trackLive = "1"; };
    ws.onmessage = function (ev) { const s = JSON.parse(ev.data); show(s); document.body.dataset.trackUpdates = String(+(document.body.dataset.trackUpdates || 0) + 1); };
    ws.onclose = function () {
      connEl.textContent = "Reconnecting…";
      setTimeout(connect, backoff);
      backoff = Math.min(backoff * 2, 15000);
    };
  }
  connect();
})();
