/* The map stack every map page shares: a Leaflet map on the offline base (a plain background, no
   tile layer unless one is configured) drawing GeoJSON layers styled by `properties.kind`
   through CSS classes (map-road, map-zone, map-route, map-depot, map-stop, map-driver, ...), so
   colours live in serena.css.

   Declarative use: <div data-map data-map-config="ID"> plus
   <script type="application/json" id="ID">{"tile_url": null, "layers": [{name, title, data}]}</script>.
   Scripted use (e.g. a live fleet board): `const m = SerenaMap.create(el, config);`, then
   `m.setLayer("drivers", featureCollection)` whenever new data arrives. */
"use strict";

window.SerenaMap = (function () {
  function kindClass(feature) {
    const kind = (feature && feature.properties && feature.properties.kind) || "other";
    return "map-feature map-" + String(kind).replace(/[^a-z0-9_-]/gi, "");
  }

  function geoLayer(data) {
    return L.geoJSON(data, {
      style: (f) => ({ className: kindClass(f) }),
      pointToLayer: (f, latlng) =>
        L.circleMarker(latlng, { className: kindClass(f), radius: f.properties && f.properties.kind === "depot" ? 9 : 7 }),
      onEachFeature: (f, l) => {
        if (f.properties && f.properties.name) l.bindTooltip(String(f.properties.name));
      },
    });
  }

  /** A map on `el` drawing `config.layers`; returns {map, layers, setLayer(name, data, title), fit()}. */
  function create(el, config) {
    const cfg = config || {};
    const map = L.map(el, { zoomSnap: 0.25 });
    map.attributionControl.setPrefix("Leaflet");
    if (cfg.tile_url) {
      L.tileLayer(cfg.tile_url, { maxZoom: 19, attribution: cfg.tile_attribution || "" }).addTo(map);
    }
    L.control.scale({ imperial: false }).addTo(map);

    const layers = {};
    let control = null;

    function setLayer(name, data, title) {
      if (layers[name]) {
        layers[name].clearLayers();
        layers[name].addData(data);
        return layers[name];
      }
      const layer = geoLayer(data).addTo(map);
      layers[name] = layer;
      if (control) control.addOverlay(layer, title || name);
      return layer;
    }

    function fit() {
      const bounds = L.featureGroup(Object.values(layers)).getBounds();
      if (bounds.isValid()) map.fitBounds(bounds, { padding: [24, 24] });
      else map.setView([0, 0], 2);
    }

    const initial = cfg.layers || [];
    for (const layer of initial) setLayer(layer.name, layer.data, layer.title);
    if (initial.length > 1) {
      control = L.control.layers(null, {}, { collapsed: false }).addTo(map);
      for (const layer of initial) control.addOverlay(layers[layer.name], layer.title || layer.name);
    }
    fit();
    el.dataset.ready = "true"; // tests and other scripts wait for this
    return { map, layers, setLayer, fit };
  }

  document.addEventListener("DOMContentLoaded", function () {
    for (const el of document.querySelectorAll("[data-map][data-map-config]")) {
      const source = document.getElementById(el.dataset.mapConfig);
      el.serenaMap = create(el, source ? JSON.parse(source.textContent) : {});
    }
  });

  return { create };
})();
