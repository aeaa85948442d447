/* Service worker of the driver app: caches the app shell so the app opens with no network.

   Served by serena/web/driver.py at /driver/sw.js, which fills in CACHE (named after a hash
   of the shell's URLs, so a deploy that changes any file installs a fresh shell and drops the old one) and SHELL
   (the page and its versioned static URLs). API calls (/v1/...) and WebSockets are never
   cached or answered from the cache: a task list or a scan result must come from the server.

   The page: network first (a deploy shows at once), the cached shell when offline.
   Static files: cache first (their URLs carry ?v=<hash of the file's bytes>, so a cached copy is never stale). */
"use strict";

const CACHE = __CACHE__;
const SHELL = __SHELL__;
const PAGE = SHELL[0];

self.addEventListener("install", function (event) {
  event.waitUntil(caches.open(CACHE).then((c) => c.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", function (event) {
  event.waitUntil(
    caches.keys()
      .then((keys) => Promise.all(keys.filter((k) => k.startsWith("serena-driver-") && k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener("fetch", function (event) {
  const req = event.request;
  if (req.method !== "GET") return;
  const url = new URL(req.url);
  if (url.origin !== self.location.origin) return;
  if (req.mode === "navigate" && url.pathname === PAGE) {
    event.respondWith(
      fetch(req)
        .then(function (resp) {
          if (resp.ok) {
            const copy = resp.clone();
            caches.open(CACHE).then((c) => c.put(PAGE, copy));
          }
          return resp;
        })
        .catch(() => caches.match(PAGE)),
    );
    return;
  }
  if (SHELL.includes(url.pathname + url.search)) {
    event.respondWith(caches.match(req).then((hit) => hit || fetch(req)));
  }
  // Everything else (the API above all) goes to the network as if there were no worker.
});
