/* Terapan review: Annotorious regions, side panel, comment threads, status buttons. */
(function () {
  "use strict";
  const T = window.Terapan;
  const cfg = T.config();
  const viewer = T.viewer;
  if (!viewer || !cfg.api || !OpenSeadragon.Annotorious) return;

  const anno = OpenSeadragon.Annotorious(viewer, {
    disableEditor: true, // our side panel is the editor
    readOnly: !cfg.canReview,
    allowEmpty: true,
    drawOnSingleClick: false,
  });
  window.terapan.anno = anno;

  const list = document.getElementById("region-list");
  const count = document.getElementById("region-count");
  const detail = document.getElementById("region-detail");
  const thread = document.getElementById("thread");
  const errBox = document.getElementById("review-error");
  const filter = document.getElementById("status-filter");
  const form = document.getElementById("comment-form");
  const delBtn = document.getElementById("delete-region");
  const STATUS_LABEL = { open: "open", needs_rerender: "needs re-render", approved: "approved", resolved: "resolved" };

  let regions = []; // Web Annotations from the API
  let selected = null; // region id

  function showError(msg) {
    if (!errBox) return;
    errBox.textContent = msg || "";
    errBox.hidden = !msg;
  }
  function urlFor(kind, id) { return cfg.api[kind].replace("{id}", String(id)); }
  function byId(id) { return regions.find(function (r) { return r.terapan.id === id; }); }
  function text(tag, value, cls) {
    const el = document.createElement(tag);
    el.textContent = value;
    if (cls) el.className = cls;
    return el;
  }

  function renderList() {
    const f = filter ? filter.value : "";
    list.replaceChildren();
    const shown = regions.filter(function (r) { return !f || r.terapan.status === f; });
    shown.forEach(function (r) {
      const t = r.terapan;
      const li = document.createElement("li");
      li.dataset.id = t.id;
      li.className = "region st-" + t.status + (t.id === selected ? " selected" : "");
      li.tabIndex = 0;
      li.appendChild(text("span", "#" + t.id, "rid"));
      li.appendChild(text("span", STATUS_LABEL[t.status] || t.status, "status st-" + t.status));
      li.appendChild(text("span", t.author || "?", "author"));
      li.appendChild(text("span", t.comments + (t.comments === 1 ? " comment" : " comments"), "ncomments"));
      const first = (r.body || []).find(function (b) { return b.purpose === "commenting"; });
      if (first) li.appendChild(text("span", first.value.slice(0, 80), "excerpt"));
      li.addEventListener("click", function () { select(t.id, true); });
      li.addEventListener("keydown", function (e) { if (e.key === "Enter") select(t.id, true); });
      list.appendChild(li);
    });
    if (count) count.textContent = "(" + regions.length + ")";
  }

  function fly(r) {
    const b = r.terapan.bbox;
    const pad = Math.max(b.w, b.h) * 0.4 + 16;
    const rect = viewer.viewport.imageToViewportRectangle(b.x - pad, b.y - pad, b.w + 2 * pad, b.h + 2 * pad);
    viewer.viewport.fitBounds(rect, false);
  }

  async function select(id, flyTo) {
    selected = id;
    const r = byId(id);
    renderList();
    if (!r) { detail.hidden = true; return; }
    if (flyTo) fly(r);
    try { anno.selectAnnotation(r.id); } catch (e) { /* not drawn yet */ }
    detail.hidden = false;
    const t = r.terapan;
    document.getElementById("detail-title").textContent = "Region #" + t.id + " - " + (STATUS_LABEL[t.status] || t.status);
    document.getElementById("detail-meta").textContent =
      "by " + (t.author || "?") + ", seen on v" + t.version + ", " + t.bbox.w + "\u00d7" + t.bbox.h + " px at (" + t.bbox.x + ", " + t.bbox.y + ")";
    if (delBtn) delBtn.hidden = !t.canModify;
    document.querySelectorAll("#status-buttons button").forEach(function (b) {
      b.classList.toggle("active", b.dataset.status === t.status);
    });
    await loadThread(id);
  }

  async function loadThread(id) {
    thread.replaceChildren();
    try {
      const data = await T.api(urlFor("comments", id));
      data.items.forEach(function (c) {
        const li = document.createElement("li");
        li.appendChild(text("span", c.author || "?", "author"));
        li.appendChild(text("time", new Date(c.created).toLocaleString(), "when"));
        li.appendChild(text("p", c.body, "body"));
        thread.appendChild(li);
      });
    } catch (e) {
      showError("Comments: " + e.message);
    }
  }

  async function load() {
    try {
      const data = await T.api(cfg.api.annotations);
      regions = data.items;
      anno.setAnnotations(regions);
      renderList();
      document.body.dataset.regionsLoaded = String(regions.length);
      if (selected) select(selected, false);
    } catch (e) {
      showError("Regions: " + e.message);
    }
  }

  function replace(r) {
    const i = regions.findIndex(function (x) { return x.terapan.id === r.terapan.id; });
    if (i >= 0) regions[i] = r; else regions.push(r);
  }

  anno.on("selectAnnotation", function (a) {
    const r = regions.find(function (x) { return x.id === a.id; });
    if (r && r.terapan.id !== selected) select(r.terapan.id, false);
  });

  if (cfg.canReview) {
    // A drawn shape becomes a region at once; the side panel takes comments.
    anno.on("createSelection", async function (selection) {
      showError("");
      try {
        const created = await T.api(cfg.api.annotations, {
          method: "POST",
          body: { target: selection.target, version: cfg.pyramid.version, body: [] },
        });
        anno.cancelSelected();
        replace(created);
        anno.addAnnotation(created);
        renderList();
        select(created.terapan.id, false);
        const box = document.getElementById("comment-body");
        if (box) box.focus();
      } catch (e) {
        anno.cancelSelected();
        showError("Could not save the region: " + e.message);
      }
      setTool(null);
    });

    const tools = document.querySelectorAll("#draw-tools button");
    function setTool(name) {
      tools.forEach(function (b) { b.classList.toggle("active", b.dataset.tool === name); });
      if (name) {
        anno.setDrawingTool(name);
        anno.setDrawingEnabled(true);
      } else {
        anno.setDrawingEnabled(false);
      }
    }
    tools.forEach(function (b) {
      b.addEventListener("click", function () {
        setTool(b.classList.contains("active") ? null : b.dataset.tool);
      });
    });

    if (form) {
      form.addEventListener("submit", async function (e) {
        e.preventDefault();
        const box = document.getElementById("comment-body");
        const body = box.value.trim();
        if (!selected || !body) return;
        showError("");
        try {
          await T.api(urlFor("comments", selected), { method: "POST", body: { body: body } });
          box.value = "";
          const r = byId(selected);
          if (r) r.terapan.comments += 1;
          renderList();
          await loadThread(selected);
        } catch (err) {
          showError("Could not comment: " + err.message);
        }
      });
    }
    if (delBtn) {
      delBtn.addEventListener("click", async function () {
        const r = byId(selected);
        if (!r || !window.confirm("Delete region #" + r.terapan.id + "?")) return;
        try {
          await T.api(urlFor("annotation", r.terapan.id), { method: "DELETE" });
          anno.removeAnnotation(r.id);
          regions = regions.filter(function (x) { return x !== r; });
          selected = null;
          detail.hidden = true;
          renderList();
        } catch (err) {
          showError("Could not delete: " + err.message);
        }
      });
    }
  }

  if (cfg.canEdit) {
    document.querySelectorAll("#status-buttons button").forEach(function (b) {
      b.addEventListener("click", async function () {
        if (!selected) return;
        showError("");
        try {
          const r = await T.api(urlFor("status", selected), { method: "POST", body: { status: b.dataset.status } });
          replace(r);
          select(selected, false);
        } catch (err) {
          showError("Could not change the status: " + err.message);
        }
      });
    });
  }

  if (filter) filter.addEventListener("change", renderList);
  viewer.addHandler("open", load);
  if (viewer.world.getItemCount()) load();
})();
