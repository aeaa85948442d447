/* Map page: a Leaflet map with no tile layer (unless one is configured) drawing the GeoJSON layers
   the server embedded in #map-config. Features are styled by `properties.kind` through CSS classes
   (map-road, map-zone, map-route, map-depot, map-stop), so colours live in serena.css. */
"use strict";

(function () {
  const el = document.querySelector("[data-map]");
  const config = JSON.parse(document.getElementById("map-config").textContent);

  const map = L.map(el, { zoomSnap: 0.25, worldCopyJump: false });
  map.attributionControl.setPrefix("Leaflet");
  if (config.tile_url) {
    L.tileLayer(config.tile_url, { maxZoom: 19, attribution: config.tile_attribution || "" }).addTo(map);
  }
  L.control.scale({ imperial: false }).addTo(map);

  function cls(feature) {
    const kind = (feature.properties && feature.properties.kind) || "other";
    return "map-feature map-" + String(kind).replace(/[^a-z0-9_-]/gi, "");
  }

  const all = L.featureGroup();
  const overlays = {};
  for (const layer of config.layers) {
    const geo = L.geoJSON(layer.data, {
      style: (f) => ({ className: cls(f) }),
      pointToLayer: (f, latlng) =>
        L.circleMarker(latlng, { className: cls(f), radius: f.properties && f.properties.kind === "depot" ? 9 : 7 }),
      onEachFeature: (f, l) => {
        if (f.properties && f.properties.name) l.bindTooltip(String(f.properties.name));
      },
    });
    geo.addTo(all);
    overlays[layer.title] = geo;
  }
  all.addTo(map);
  if (config.layers.length > 1) L.control.layers(null, overlays, { collapsed: false }).addTo(map);

  const bounds = all.getBounds();
  if (bounds.isValid()) map.fitBounds(bounds, { padding: [24, 24] });
  else map.setView([0, 0], 2);

  el.dataset.ready = "true"; // tests and other scripts wait for this
  window.serenaMap = map;
})();
