/* Shared by every page: the sign-in session (sessionStorage), an API helper that sends the bearer
   token, and the header's signed-in state.

   Tokens live in sessionStorage: per tab, gone when the tab closes, never sent automatically
   like a cookie (so no CSRF surface). The refresh token is kept too, so the session survives
   the 15-minute access token and "Sign out" can revoke it on the server. */
"use strict";

window.Serena = (function () {
  const KEY = "serena.session";
  const root = document.body ? document.body.dataset.root || "" : "";

  function session() {
    try {
      return JSON.parse(sessionStorage.getItem(KEY)) || null;
    } catch (_) {
      return null;
    }
  }

  function saveSession(tokens, user) {
    const previous = session() || {};
    const next = {
      access_token: tokens ? tokens.access_token : previous.access_token,
      refresh_token: tokens ? tokens.refresh_token : previous.refresh_token,
      expires_at_ms: tokens ? Date.now() + tokens.expires_in_s * 1000 : previous.expires_at_ms,
      mfa: tokens ? tokens.mfa : previous.mfa,
      user: user || previous.user || null,
    };
    sessionStorage.setItem(KEY, JSON.stringify(next));
    renderHeader();
    return next;
  }

  function clearSession() {
    sessionStorage.removeItem(KEY);
    renderHeader();
  }

  async function request(path, options) {
    const opts = options || {};
    const headers = Object.assign({ Accept: "application/json" }, opts.headers || {});
    const s = session();
    if (opts.auth !== false && s && s.access_token) headers.Authorization = "Bearer " + s.access_token;
    let body;
    if (opts.body !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(opts.body);
    }
    const response = await fetch(root + path, { method: opts.method || "GET", headers, body, credentials: "same-origin" });
    let data = null;
    const type = response.headers.get("Content-Type") || "";
    if (type.includes("json")) {
      try { data = await response.json(); } catch (_) { data = null; }
    }
    return { ok: response.ok, status: response.status, data, headers: response.headers };
  }

  async function refresh() {
    const s = session();
    if (!s || !s.refresh_token) return false;
    const r = await request("/v1/auth/refresh", { method: "POST", auth: false, body: { refresh_token: s.refresh_token } });
    if (!r.ok) {
      clearSession();
      return false;
    }
    saveSession(r.data);
    return true;
  }

  /** Call the JSON API: `{ok, status, data, headers}`. A 401 with a refresh token rotates it and retries once. */
  async function api(path, options) {
    const r = await request(path, options);
    if (r.status === 401 && (!options || options.auth !== false) && (await refresh())) {
      return request(path, options);
    }
    return r;
  }

  /** A one-line, human reason from an API error body (`{error, detail}` or a 422 list). */
  function errorText(r) {
    if (r.status === 0) return "The server could not be reached.";
    const d = r.data || {};
    if (r.status === 429) {
      const wait = r.headers.get("Retry-After");
      return "Too many attempts." + (wait ? " Try again in " + wait + " s." : " Try again later.");
    }
    if (typeof d.detail === "string") return d.detail;
    return "Request failed (HTTP " + r.status + ").";
  }

  /** A ws:// or wss:// URL for `path` on this app. Browsers cannot set headers on a WebSocket, so
      an endpoint that needs the caller sends the access token in its first message. */
  function wsUrl(path) {
    const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    return scheme + "//" + window.location.host + root + path;
  }

  async function signOut() {
    const s = session();
    if (s && s.refresh_token) {
      try {
        await request("/v1/auth/logout", { method: "POST", auth: false, body: { refresh_token: s.refresh_token } });
      } catch (_) { /* signing out locally still matters when the server is unreachable */ }
    }
    clearSession();
  }

  function renderHeader() {
    const box = document.querySelector("[data-session]");
    if (!box) return;
    const s = session();
    const user = s && s.access_token ? s.user : null;
    box.querySelector("[data-session-signin]").hidden = Boolean(user);
    box.querySelector("[data-session-user]").hidden = !user;
    box.querySelector("[data-session-email]").textContent = user ? user.email : "";
  }

  document.addEventListener("DOMContentLoaded", function () {
    renderHeader();
    const button = document.querySelector("[data-session-signout]");
    if (button) {
      button.addEventListener("click", async function () {
        button.disabled = true;
        await signOut();
        button.disabled = false;
        window.location.assign(root + "/login");
      });
    }
  });

  return { api, session, saveSession, clearSession, signOut, errorText, wsUrl, root };
})();
