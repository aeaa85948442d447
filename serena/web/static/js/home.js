/* Home page: the platform's health, from GET /health (200 when all is well, 503 when degraded). */
"use strict";

(function () {
  const NAMES = { postgres: "PostgreSQL", redis: "Redis", mqtt: "MQTT broker" };
  const list = document.querySelector("[data-status-checks]");
  const overall = document.querySelector("[data-status-overall]");
  const updated = document.querySelector("[data-status-updated]");

  function detail(check) {
    if (!check.ok) return check.error || "not reachable";
    const parts = [];
    if (check.version) parts.push("v" + String(check.version).split(" ")[0]);  // "15.4 (Debian …)" → "v15.4"
    if (check.postgis) parts.push("PostGIS " + check.postgis);
    if (check.url) parts.push(check.url);
    if (check.latency_ms !== undefined) parts.push(check.latency_ms + " ms");
    return parts.join(" · ");
  }

  function item(name, state, text, cls) {
    const li = document.createElement("li");
    li.className = "check " + cls;
    li.dataset.check = name;
    const n = document.createElement("span");
    n.className = "check-name";
    n.textContent = NAMES[name] || name;
    const d = document.createElement("span");
    d.className = "check-detail";
    d.textContent = text;
    const s = document.createElement("span");
    s.className = "check-state";
    s.textContent = state;
    li.append(n, s, d);
    return li;
  }

  function setOverall(text, cls) {
    overall.textContent = text;
    overall.className = "badge " + cls;
  }

  async function load() {
    list.setAttribute("aria-busy", "true");
    let r;
    try {
      r = await Serena.api("/health");
    } catch (_) {
      r = { ok: false, status: 0, data: null };
    }
    list.replaceChildren();
    if (r.data && r.data.checks) {
      for (const [name, check] of Object.entries(r.data.checks)) {
        list.append(item(name, check.ok ? "up" : "down", detail(check), check.ok ? "check-ok" : "check-bad"));
      }
      if (r.data.status === "ok") setOverall("all systems up", "badge-ok");
      else setOverall("degraded", "badge-bad");
    } else {
      list.append(item("api", "down", r.status ? "HTTP " + r.status : "the API could not be reached", "check-bad"));
      setOverall("unreachable", "badge-bad");
    }
    document.body.dataset.status = r.data && r.data.status ? r.data.status : "unreachable";
    updated.textContent = "Checked at " + new Date().toLocaleTimeString();
    list.setAttribute("aria-busy", "false");
  }

  load();
  setInterval(load, 30000);
})();
