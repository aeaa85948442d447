/* Sign-in page: POST /v1/auth/login, keep the tokens in sessionStorage, then show who is signed in. */
"use strict";

(function () {
  const form = document.querySelector("[data-login-form]");
  const error = document.querySelector("[data-login-error]");
  const submit = document.querySelector("[data-login-submit]");
  const done = document.querySelector("[data-login-done]");

  // /login?next=/fleet sends the user back where they came from; only paths on this site.
  const next = new URLSearchParams(window.location.search).get("next");
  if (next) {
    // Resolve it the way the browser would and keep it only if it stays on this origin: string
    // checks miss tricks like "/\t/evil.example" (browsers drop the tab, leaving "//evil.example").
    let target = null;
    try { target = new URL(next, window.location.origin); } catch (_) { /* not a URL: ignore it */ }
    if (target && target.origin === window.location.origin) {
      done.querySelector("[data-login-continue]").href = target.pathname + target.search + target.hash;
    }
  }

  function showError(text) {
    error.textContent = text;
    error.hidden = false;
  }

  function showSignedIn(s) {
    const user = s.user || {};
    form.hidden = true;
    done.hidden = false;
    done.querySelector("[data-login-email]").textContent = user.email || "";
    const roles = user.roles && user.roles.length ? user.roles.join(", ") : "none";
    done.querySelector("[data-login-roles]").textContent = "Roles: " + roles;
    const staff = (user.roles || []).some((r) => ["dispatcher", "support", "marketing", "admin"].includes(r));
    done.querySelector("[data-login-mfa-note]").hidden = !(staff && !s.mfa);
    document.body.dataset.signedIn = "true";
  }

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    error.hidden = true;
    const email = form.email.value.trim();
    const password = form.password.value;
    const totp = form.totp_code.value.trim();
    if (!email || !password) {
      showError("Enter your e-mail and password.");
      (email ? form.password : form.email).focus();
      return;
    }
    if (totp && !/^\d{6}$/.test(totp)) {
      showError("The authenticator code is six digits.");
      form.totp_code.focus();
      return;
    }
    const body = { email, password };
    if (totp) body.totp_code = totp;

    submit.disabled = true;
    submit.textContent = "Signing in…";
    try {
      const r = await Serena.api("/v1/auth/login", { method: "POST", body, auth: false });
      if (!r.ok) {
        showError(Serena.errorText(r));
        return;
      }
      Serena.saveSession(r.data);
      const me = await Serena.api("/v1/me");
      const s = Serena.saveSession(null, me.ok ? me.data : { email, roles: [] });
      form.password.value = "";
      showSignedIn(s);
      done.focus();
    } catch (_) {
      showError("The server could not be reached.");
    } finally {
      submit.disabled = false;
      submit.textContent = "Sign in";
    }
  });

  const existing = Serena.session();
  if (existing && existing.access_token && existing.user) showSignedIn(existing);
})();
