// clip-search page: plain JavaScript, no build step, no network beyond this app's own API.
(function () {
  "use strict";

  var byId = function (id) { return document.getElementById(id); };
  var form = byId("search-form"), input = byId("q"), kSelect = byId("k"), photoInput = byId("photo");
  var results = byId("results"), statusLine = byId("status"), facetsBox = byId("facets");
  var summary = byId("query-summary"), queryPhoto = byId("query-photo"), queryLabel = byId("query-label");
  var clearFilters = byId("clear-filters");

  // The current query: exactly one of text, photo (a Blob) or like (a product id), plus k and filters.
  var state = { text: "", photo: null, photoName: "", like: null, likeTitle: "", k: 10, filters: {} };
  var facetData = [];
  var searchSeq = 0;
  var photoUrl = null;

  function filterSpecs() {
    var specs = [];
    Object.keys(state.filters).sort().forEach(function (field) {
      state.filters[field].forEach(function (value) { specs.push(field + ":" + value); });
    });
    return specs;
  }

  function syncUrl() {
    var params = new URLSearchParams();
    if (state.text) params.set("q", state.text);
    if (state.like) params.set("like", state.like);
    if (state.k !== 10) params.set("k", String(state.k));
    filterSpecs().forEach(function (spec) { params.append("filter", spec); });
    var query = params.toString();
    history.replaceState(null, "", query ? "?" + query : window.location.pathname);
  }

  function setStatus(text, isError) {
    statusLine.textContent = text;
    statusLine.classList.toggle("error", !!isError);
  }

  function showSummary() {
    if (photoUrl) { URL.revokeObjectURL(photoUrl); photoUrl = null; }
    queryPhoto.hidden = true;
    queryPhoto.removeAttribute("src");
    if (state.photo) {
      photoUrl = URL.createObjectURL(state.photo);
      queryPhoto.src = photoUrl;
      queryPhoto.alt = "Your photo" + (state.photoName ? " (" + state.photoName + ")" : "");
      queryPhoto.hidden = false;
      queryLabel.textContent = "Products that look like your photo";
    } else if (state.like) {
      queryLabel.textContent = "More like " + (state.likeTitle || state.like);
    } else {
      summary.hidden = true;
      return;
    }
    summary.hidden = false;
  }

  function request() {
    var specs = filterSpecs();
    if (state.photo) {
      var body = new FormData();
      body.append("image", state.photo, state.photoName || "photo");
      body.append("k", String(state.k));
      specs.forEach(function (spec) { body.append("filter", spec); });
      return fetch("api/search", { method: "POST", body: body });
    }
    if (state.like) {
      return fetch("api/search", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ like: state.like, k: state.k, filter: specs })
      });
    }
    var params = new URLSearchParams({ q: state.text, k: String(state.k) });
    specs.forEach(function (spec) { params.append("filter", spec); });
    return fetch("api/search?" + params.toString());
  }

  function run() {
    syncUrl();
    showSummary();
    renderFacets();
    if (!state.text && !state.photo && !state.like) {
      results.replaceChildren();
      setStatus("");
      return Promise.resolve();
    }
    var seq = ++searchSeq;
    var started = performance.now();
    setStatus("Searching…");
    results.setAttribute("aria-busy", "true");
    return request().then(function (response) {
      return response.json().catch(function () { return { error: "the server sent no JSON (HTTP " + response.status + ")" }; })
        .then(function (answer) { return { ok: response.ok, answer: answer }; });
    }).then(function (outcome) {
      if (seq !== searchSeq) return;  // a newer search is under way
      results.removeAttribute("aria-busy");
      if (!outcome.ok) {
        results.replaceChildren();
        setStatus("Search failed: " + (outcome.answer.error || "unknown error"), true);
        return;
      }
      render(outcome.answer, performance.now() - started);
    }).catch(function (error) {
      if (seq !== searchSeq) return;
      results.removeAttribute("aria-busy");
      setStatus("Search failed: " + error.message, true);
    });
  }

  function render(answer, roundTripMs) {
    var hits = answer.hits || [];
    var items = hits.map(renderHit);
    results.replaceChildren.apply(results, items);
    var took = answer.took_ms || {};
    var server = (took.encode || 0) + (took.search || 0);
    setStatus(hits.length + (hits.length === 1 ? " result" : " results") + " in " + Math.round(roundTripMs) +
      " ms (encode " + fmt(took.encode) + " ms, search " + fmt(took.search) + " ms; server " + fmt(server) + " ms)");
    results.dataset.count = String(hits.length);
  }

  function fmt(value) { return (value || 0).toFixed(1); }

  function renderHit(hit) {
    var item = document.createElement("li");
    item.className = "hit";
    item.dataset.id = hit.id;
    var figure = document.createElement("figure");
    var title = hit.title || hit.id;
    if (hit.image_url) {
      var image = document.createElement("img");
      image.src = hit.image_url;
      image.alt = title;
      image.decoding = "async";
      figure.appendChild(image);
    } else {
      var none = document.createElement("div");
      none.className = "no-photo";
      none.textContent = "no photo";
      figure.appendChild(none);
    }
    var caption = document.createElement("figcaption");
    var name = document.createElement("p");
    name.className = "title";
    name.textContent = title;
    var meta = document.createElement("p");
    meta.className = "meta";
    var score = document.createElement("span");
    score.className = "score";
    score.textContent = "score " + (hit.score === null || hit.score === undefined ? "–" : hit.score.toFixed(3));
    meta.appendChild(score);
    facetData.forEach(function (facet) {
      if (hit[facet.field] !== undefined && hit[facet.field] !== null) {
        meta.appendChild(document.createTextNode(" · " + hit[facet.field]));
      }
    });
    caption.appendChild(name);
    caption.appendChild(meta);
    figure.appendChild(caption);
    item.appendChild(figure);
    var more = document.createElement("button");
    more.type = "button";
    more.className = "more";
    more.textContent = "More like this";
    more.setAttribute("aria-label", "More like " + title);
    more.addEventListener("click", function () {
      state.like = hit.id; state.likeTitle = title; state.text = ""; state.photo = null; input.value = "";
      run().then(function () { results.focus(); });
    });
    item.appendChild(more);
    return item;
  }

  // --- facets ---------------------------------------------------------------------------------
  function loadFacets() {
    return fetch("api/facets").then(function (response) { return response.ok ? response.json() : { facets: [] }; })
      .then(function (answer) { facetData = answer.facets || []; renderFacets(); })
      .catch(function () { facetData = []; renderFacets(); });
  }

  function renderFacets() {
    var boxes = [];
    var known = {};
    facetData.forEach(function (facet) {
      known[facet.field] = facet.values.map(function (entry) { return entry.value; });
    });
    // A filter from the URL whose value is not among the most common ones still gets its box.
    Object.keys(state.filters).forEach(function (field) {
      if (!known[field]) { facetData.push({ field: field, values: [] }); known[field] = []; }
    });
    facetData.forEach(function (facet) {
      var set = document.createElement("fieldset");
      var legend = document.createElement("legend");
      legend.textContent = facet.field.replace(/_/g, " ");
      set.appendChild(legend);
      var list = document.createElement("div");
      list.className = "values";
      var entries = facet.values.slice();
      (state.filters[facet.field] || []).forEach(function (value) {
        if (known[facet.field].indexOf(value) < 0) entries.push({ value: value, count: null });
      });
      entries.forEach(function (entry) {
        var label = document.createElement("label");
        var box = document.createElement("input");
        box.type = "checkbox";
        box.name = "filter";
        box.value = facet.field + ":" + entry.value;
        box.dataset.field = facet.field;
        box.dataset.value = entry.value;
        box.checked = (state.filters[facet.field] || []).indexOf(entry.value) >= 0;
        box.addEventListener("change", onFilterChange);
        label.appendChild(box);
        label.appendChild(document.createTextNode(entry.value));
        if (entry.count !== null) {
          var count = document.createElement("span");
          count.className = "count";
          count.textContent = String(entry.count);
          label.appendChild(count);
        }
        list.appendChild(label);
      });
      set.appendChild(list);
      boxes.push(set);
    });
    var focused = document.activeElement && document.activeElement.name === "filter" ? document.activeElement.value : null;
    if (boxes.length) {
      facetsBox.replaceChildren.apply(facetsBox, boxes);
    } else {
      var none = document.createElement("p");
      none.className = "hint";
      none.textContent = "No filterable fields in this index.";
      facetsBox.replaceChildren(none);
    }
    if (focused) {
      var again = facetsBox.querySelector('input[name="filter"][value="' + CSS.escape(focused) + '"]');
      if (again) again.focus();
    }
    clearFilters.hidden = filterSpecs().length === 0;
  }

  function onFilterChange(event) {
    var box = event.target, field = box.dataset.field, value = box.dataset.value;
    var values = state.filters[field] || [];
    if (box.checked) {
      if (values.indexOf(value) < 0) values.push(value);
    } else {
      values = values.filter(function (v) { return v !== value; });
    }
    if (values.length) state.filters[field] = values; else delete state.filters[field];
    run();
  }

  clearFilters.addEventListener("click", function () { state.filters = {}; run(); });

  // --- photos: file picker, drag and drop, paste ---------------------------------------------
  function searchPhoto(file) {
    if (!file) return;
    if (file.type && file.type.indexOf("image/") !== 0) {
      setStatus("That file is " + file.type + ", not a photo.", true);
      return;
    }
    state.photo = file; state.photoName = file.name || "pasted photo"; state.text = ""; state.like = null;
    input.value = "";
    run();
  }

  photoInput.addEventListener("change", function () {
    searchPhoto(photoInput.files && photoInput.files[0]);
    photoInput.value = "";
  });

  document.addEventListener("dragover", function (event) {
    if (event.dataTransfer && Array.prototype.indexOf.call(event.dataTransfer.types, "Files") >= 0) {
      event.preventDefault();
      document.body.classList.add("dragging");
    }
  });
  document.addEventListener("dragleave", function (event) {
    if (event.target === document.documentElement || event.relatedTarget === null) document.body.classList.remove("dragging");
  });
  document.addEventListener("drop", function (event) {
    document.body.classList.remove("dragging");
    var files = event.dataTransfer && event.dataTransfer.files;
    if (files && files.length) {
      event.preventDefault();
      searchPhoto(files[0]);
    }
  });
  document.addEventListener("paste", function (event) {
    var items = (event.clipboardData && event.clipboardData.items) || [];
    for (var i = 0; i < items.length; i++) {
      if (items[i].kind === "file" && items[i].type.indexOf("image/") === 0) {
        event.preventDefault();
        searchPhoto(items[i].getAsFile());
        return;
      }
    }
  });

  // --- text -----------------------------------------------------------------------------------
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = input.value.trim();
    if (!text) { setStatus("Type what you are looking for, or give a photo.", true); return; }
    state.text = text; state.photo = null; state.like = null;
    run();
  });

  kSelect.addEventListener("change", function () {
    state.k = parseInt(kSelect.value, 10) || 10;
    if (state.text || state.photo || state.like) run(); else syncUrl();
  });

  // --- a shared link: /?q=TEXT&filter=field:value&k=N (or like=ID) runs on load -------------
  function fromUrl() {
    var params = new URLSearchParams(window.location.search);
    state.text = (params.get("q") || "").trim();
    state.like = state.text ? null : (params.get("like") || null);
    var k = parseInt(params.get("k") || "10", 10);
    state.k = [10, 20, 50, 100].indexOf(k) >= 0 ? k : (k >= 1 && k <= 100 ? k : 10);
    if ([10, 20, 50, 100].indexOf(state.k) < 0) {
      var option = document.createElement("option");
      option.value = String(state.k); option.textContent = String(state.k);
      kSelect.appendChild(option);
    }
    kSelect.value = String(state.k);
    state.filters = {};
    params.getAll("filter").forEach(function (spec) {
      // The API's one grammar (docs/search.md, Filters): the first "=" or ":" ends the field name.
      var at = spec.search(/[=:]/);
      var field = at > 0 ? spec.slice(0, at).trim() : "", value = spec.slice(at + 1);
      if (!field) return;
      (state.filters[field] = state.filters[field] || []).push(value);
    });
    input.value = state.text;
  }

  fromUrl();
  loadFacets().then(run);
})();
