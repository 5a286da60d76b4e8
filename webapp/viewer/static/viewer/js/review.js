/* Terapan review: Annotorious regions, side panel (a drawer on phones), threaded
   comments with replies, edits and @mentions, status buttons, live updates by
   polling the changes cursor, region/comment links, notifications badge. */
(function () {
  "use strict";
  const T = window.Terapan;
  const cfg = T.config();
  const viewer = T.viewer;
  if (!viewer || !cfg.api || !OpenSeadragon.Annotorious) return;

  const POLL_MS = 3000;
  const SAVE_SHAPE_MS = 400;
  const anno = OpenSeadragon.Annotorious(viewer, {
    disableEditor: true, // our side panel is the editor
    readOnly: !cfg.canReview,
    allowEmpty: true,
    drawOnSingleClick: true, // the polygon tool starts on the first click, as its tooltip says
  });
  window.terapan.anno = anno;

  const $ = function (id) { return document.getElementById(id); };
  const list = $("region-list");
  const count = $("region-count");
  const detail = $("region-detail");
  const thread = $("thread");
  const errBox = $("review-error");
  const filter = $("status-filter");
  const form = $("comment-form");
  const box = $("comment-body");
  const delBtn = $("delete-region");
  const STATUS_LABEL = { open: "open", needs_rerender: "needs re-render", rerendered: "re-rendered", approved: "approved", resolved: "resolved" };

  let regions = []; // Web Annotations from the API
  let selected = null; // region id
  let comments = []; // the selected region's thread
  let replyTo = null; // comment id
  let cursor = cfg.cursor || 0;
  let loaded = false;
  let accessLost = false; // signed out or removed: the changes poll stops

  function showError(msg) {
    if (!errBox) return;
    errBox.textContent = msg || "";
    errBox.hidden = !msg;
  }
  function urlFor(kind, id) { return cfg.api[kind].replace("{id}", String(id)); }
  function byId(id) { return regions.find(function (r) { return r.terapan.id === id; }); }
  function byAnnoId(aid) { return regions.find(function (r) { return r.id === aid; }); }
  function text(tag, value, cls) {
    const el = document.createElement(tag);
    el.textContent = value;
    if (cls) el.className = cls;
    return el;
  }
  function button(label, cls, onClick) {
    const b = text("button", label, cls);
    b.type = "button";
    b.addEventListener("click", onClick);
    return b;
  }

  /* Comment text with members' @names marked (text nodes only: no HTML injection). */
  function withMentions(body) {
    const p = document.createElement("p");
    p.className = "body";
    const names = new Set((cfg.members || []).map(function (n) { return n.toLowerCase(); }));
    const re = /(^|[^\w@.])@([\w.@+-]+)/g;
    let last = 0, m;
    while ((m = re.exec(body))) {
      const name = m[2].replace(/\.+$/, "");
      if (!names.has(name.toLowerCase())) continue;
      const at = m.index + m[1].length;
      p.appendChild(document.createTextNode(body.slice(last, at)));
      p.appendChild(text("span", "@" + name, "mention" + (name === cfg.user ? " me" : "")));
      last = at + 1 + name.length;
    }
    p.appendChild(document.createTextNode(body.slice(last)));
    return p;
  }

  // ---- region list -------------------------------------------------------
  function renderList() {
    const f = filter ? filter.value : "";
    list.replaceChildren();
    regions.filter(function (r) { return !f || r.terapan.status === f; }).forEach(function (r) {
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
    const pc = $("panel-count");
    if (pc) pc.textContent = "(" + regions.length + ")";
    document.body.dataset.regions = String(regions.length);
  }

  function fly(r) {
    const b = r.terapan.bbox;
    const pad = Math.max(b.w, b.h) * 0.4 + 16;
    const rect = viewer.viewport.imageToViewportRectangle(b.x - pad, b.y - pad, b.w + 2 * pad, b.h + 2 * pad);
    viewer.viewport.fitBounds(rect, false);
  }

  function setRegionInLink(id) {
    T.hashExtra.region = id;
    if (T.writeHash) T.writeHash();
    const a = $("region-link");
    if (a && id) a.href = window.location.pathname + "#region=" + id;
  }

  async function select(id, flyTo, focusComment) {
    if (selected !== id) { replyTo = null; updateReplyTo(); }
    selected = id;
    const r = byId(id);
    renderList();
    if (!r) { detail.hidden = true; setRegionInLink(null); return; }
    if (flyTo) fly(r);
    try { anno.selectAnnotation(r.id); } catch (e) { /* not drawn yet */ }
    detail.hidden = false;
    renderDetail(r);
    setRegionInLink(id);
    openDrawer(true);
    await loadThread(id);
    if (focusComment) highlightComment(focusComment);
  }

  function renderDetail(r) {
    const t = r.terapan;
    $("detail-title").textContent = "Region #" + t.id + " - " + (STATUS_LABEL[t.status] || t.status);
    $("detail-meta").textContent =
      "by " + (t.author || "?") + ", seen on v" + t.version + ", " + t.bbox.w + "\u00d7" + t.bbox.h + " px at (" + t.bbox.x + ", " + t.bbox.y + ")";
    if (delBtn) delBtn.hidden = !t.canModify;
    document.querySelectorAll("#status-buttons button").forEach(function (b) {
      b.classList.toggle("active", b.dataset.status === t.status);
    });
  }

  // ---- comment threads ---------------------------------------------------
  async function loadThread(id) {
    try {
      const data = await T.api(urlFor("comments", id));
      if (selected !== id) return;
      comments = data.items;
      renderThread();
    } catch (e) {
      showError("Comments: " + e.message);
    }
  }

  function renderThread() {
    // Replies under the comment they answer; a reply to a deleted comment stays at the top level.
    const ids = new Set(comments.map(function (c) { return c.id; }));
    const kids = new Map();
    comments.forEach(function (c) {
      const p = c.parent && ids.has(c.parent) ? c.parent : 0;
      if (!kids.has(p)) kids.set(p, []);
      kids.get(p).push(c);
    });
    const editing = thread.querySelector("li.editing");
    if (editing) return; // do not wipe a comment being edited; the next refresh catches up
    function build(parentId, into) {
      (kids.get(parentId) || []).forEach(function (c) {
        const li = document.createElement("li");
        li.id = "comment-" + c.id;
        li.dataset.id = c.id;
        const head = document.createElement("div");
        head.className = "head";
        head.appendChild(text("span", c.author || "?", "author"));
        head.appendChild(text("time", new Date(c.created).toLocaleString(), "when"));
        if (c.edited) head.appendChild(text("span", "edited", "edited muted small"));
        li.appendChild(head);
        li.appendChild(withMentions(c.body));
        if (cfg.canReview) {
          const actions = document.createElement("div");
          actions.className = "actions";
          actions.appendChild(button("Reply", "link reply", function () { startReply(c); }));
          if (c.canEdit) actions.appendChild(button("Edit", "link edit", function () { startEdit(li, c); }));
          const link = text("a", "Link", "link");
          link.href = window.location.pathname + "#comment=" + c.id;
          actions.appendChild(link);
          li.appendChild(actions);
        }
        if (kids.has(c.id)) {
          const ol = document.createElement("ol");
          ol.className = "replies";
          build(c.id, ol);
          li.appendChild(ol);
        }
        into.appendChild(li);
      });
    }
    thread.replaceChildren();
    build(0, thread);
  }

  function highlightComment(id) {
    const li = $("comment-" + id);
    if (!li) return;
    li.classList.add("highlight");
    li.scrollIntoView({ block: "nearest" });
  }

  function updateReplyTo() {
    const el = $("reply-to");
    if (!el) return;
    const c = comments.find(function (x) { return x.id === replyTo; });
    el.hidden = !c;
    if (c) el.firstChild.textContent = "Replying to " + (c.author || "?") + ":";
  }
  function startReply(c) {
    replyTo = c.id;
    updateReplyTo();
    if (box) {
      if (c.author && c.author !== cfg.user && box.value.indexOf("@" + c.author) < 0) box.value = "@" + c.author + " " + box.value;
      box.focus();
    }
  }

  function startEdit(li, c) {
    li.classList.add("editing");
    const body = li.querySelector(".body");
    const area = document.createElement("textarea");
    area.value = c.body;
    area.rows = 3;
    area.maxLength = 5000;
    area.className = "edit-body";
    const save = button("Save", "save", async function () {
      try {
        await T.api(urlFor("comment", c.id), { method: "PATCH", body: { body: area.value } });
        li.classList.remove("editing");
        await loadThread(selected);
      } catch (err) {
        showError("Could not edit: " + err.message);
      }
    });
    const cancel = button("Cancel", "link", function () { li.classList.remove("editing"); renderThread(); });
    const wrap = document.createElement("div");
    wrap.className = "edit";
    wrap.append(area, save, cancel);
    body.replaceWith(wrap);
    area.focus();
  }

  // ---- @mention suggestions ------------------------------------------------
  const suggest = $("mention-suggest");
  function mentionPrefix() {
    const upto = box.value.slice(0, box.selectionStart);
    const m = upto.match(/(^|[^\w@.])@([\w.@+-]*)$/);
    return m ? m[2] : null;
  }
  function renderSuggest() {
    const prefix = mentionPrefix();
    suggest.replaceChildren();
    const names = prefix === null ? [] : (cfg.members || []).filter(function (n) {
      return n !== cfg.user && n.toLowerCase().startsWith(prefix.toLowerCase());
    }).slice(0, 6);
    names.forEach(function (n) {
      suggest.appendChild(button("@" + n, "link", function () {
        const pos = box.selectionStart;
        const before = box.value.slice(0, pos).replace(/@[\w.@+-]*$/, "@" + n + " ");
        box.value = before + box.value.slice(pos);
        box.focus();
        box.setSelectionRange(before.length, before.length);
        suggest.hidden = true;
      }));
    });
    suggest.hidden = names.length === 0;
  }
  if (box && suggest) {
    box.addEventListener("input", renderSuggest);
    box.addEventListener("keyup", function (e) { if (e.key === "Escape") suggest.hidden = true; });
  }

  // ---- loading and live updates --------------------------------------------
  /* The list endpoint: {items}, a plain list, or pages of {results, next}. */
  async function fetchAll(url) {
    let out = [];
    let next = url;
    for (let page = 0; next && page < 200; page++) {
      const data = await T.api(next);
      if (Array.isArray(data)) return out.concat(data);
      out = out.concat(data.items || data.results || []);
      next = data.next || null;
    }
    return out;
  }

  async function load() {
    try {
      regions = await fetchAll(cfg.api.annotations);
      anno.setAnnotations(regions);
      renderList();
      loaded = true;
      document.body.dataset.regionsLoaded = String(regions.length);
      if (selected) select(selected, false);
      else openFromLink();
    } catch (e) {
      showError("Regions: " + e.message);
    }
  }

  /* #region=ID or #comment=ID: open the viewer there (fly unless the link has a view). */
  async function openFromLink() {
    const p = T.hashParams();
    const hasView = !!T.parseHash();
    if (p.has("region")) {
      const id = parseInt(p.get("region"), 10);
      if (byId(id)) select(id, !hasView);
      return;
    }
    if (p.has("comment")) {
      try {
        const c = await T.api(urlFor("comment", parseInt(p.get("comment"), 10)));
        if (byId(c.region)) await select(c.region, !hasView, c.id);
      } catch (e) {
        showError("That comment is gone: " + e.message);
      }
    }
  }
  window.addEventListener("hashchange", function () {
    const p = T.hashParams();
    const id = p.has("region") ? parseInt(p.get("region"), 10) : null;
    if ((id && id !== selected) || p.has("comment")) openFromLink();
  });

  function replace(r) {
    const i = regions.findIndex(function (x) { return x.terapan.id === r.terapan.id; });
    if (i >= 0) regions[i] = r; else regions.push(r);
  }

  let editingShape = null; // annotation id whose shape the user is changing
  function applyChanges(data) {
    if (data.reload) return load();
    cursor = data.cursor;
    data.regions.forEach(function (r) {
      replace(r);
      // A shape the user is editing keeps the user's version until saved.
      if (r.id !== editingShape) anno.addAnnotation(r);
      if (r.terapan.id === selected) {
        renderDetail(r);
        if (r.id !== editingShape) { try { anno.selectAnnotation(r.id); } catch (e) { /* gone */ } }
        loadThread(selected);
      }
    });
    data.deleted.forEach(function (id) {
      const r = byId(id);
      if (!r) return;
      anno.removeAnnotation(r.id);
      regions = regions.filter(function (x) { return x !== r; });
      if (selected === id) { selected = null; detail.hidden = true; setRegionInLink(null); }
    });
    if (data.regions.length || data.deleted.length) renderList();
    if (T.showPublished) T.showPublished(data.published);
    setUnread(data.unread);
  }

  let polling = null;
  async function poll() {
    polling = null;
    if (document.hidden) return;
    try {
      // The browser revalidates with the ETag: nothing changed = 304, no body to parse.
      const data = await T.api(cfg.api.changes + "?since=" + cursor);
      if (loaded) await applyChanges(data);
      const live = $("live");
      if (live) { live.textContent = "live"; live.classList.remove("error"); }
    } catch (e) {
      const live = $("live");
      // Signed out (another tab) or removed from the panorama: retrying cannot help.
      if (e.status === 401 || e.status === 403 || e.status === 404) accessLost = true;
      if (live) { live.textContent = accessLost ? "no access" : "offline, retrying"; live.classList.add("error"); }
      if (accessLost) showError("You no longer have access to this panorama's review (signed out, or your role was removed). Sign in again and reload the page.");
    }
    document.body.dataset.polls = String(parseInt(document.body.dataset.polls || "0", 10) + 1);
    schedule();
  }
  function schedule() {
    if (!polling && !document.hidden && !accessLost) polling = setTimeout(poll, POLL_MS);
  }
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden && !accessLost) { if (polling) clearTimeout(polling); polling = null; poll(); }
  });

  // ---- notifications -------------------------------------------------------
  const notifButton = $("notif-button");
  const notifCount = $("notif-count");
  const notifList = $("notif-list");
  function setUnread(n) {
    if (!notifCount || typeof n !== "number") return;
    notifCount.textContent = String(n);
    notifCount.hidden = n === 0;
    notifButton.classList.toggle("unread", n > 0);
    notifButton.title = n + " unread mention" + (n === 1 ? "" : "s") + " and replies";
  }
  async function showNotifications() {
    const items = $("notif-items");
    try {
      const data = await T.api(cfg.api.notifications);
      setUnread(data.unread);
      items.replaceChildren();
      if (!data.items.length) items.appendChild(text("li", "Nothing yet: you are told here when someone @mentions you or replies.", "muted"));
      data.items.forEach(function (n) {
        const li = document.createElement("li");
        li.className = n.read ? "read" : "unread";
        const a = text("a", (n.author || "?") + (n.kind === "mention" ? " mentioned you" : " replied") + " on region #" + n.region);
        a.href = n.url;
        a.addEventListener("click", function () {
          T.api(cfg.api.notificationsRead, { method: "POST", body: { ids: [n.id] } }).then(function (d) { setUnread(d.unread); });
        });
        li.appendChild(a);
        li.appendChild(text("span", n.excerpt, "excerpt"));
        items.appendChild(li);
      });
      notifList.hidden = false;
      openDrawer(true);
    } catch (e) {
      showError("Notifications: " + e.message);
    }
  }
  if (notifButton) {
    notifButton.addEventListener("click", function () {
      if (notifList.hidden) showNotifications(); else notifList.hidden = true;
    });
    $("notif-read-all").addEventListener("click", async function () {
      const d = await T.api(cfg.api.notificationsRead, { method: "POST", body: { all: true } });
      setUnread(d.unread);
      notifList.querySelectorAll("li.unread").forEach(function (li) { li.className = "read"; });
    });
  }

  // ---- phone drawer ----------------------------------------------------------
  const panelToggle = $("panel-toggle");
  function openDrawer(open) {
    if (!T.isNarrow() && open) return;
    document.body.classList.toggle("drawer-open", !!open);
    if (panelToggle) panelToggle.setAttribute("aria-expanded", String(!!open));
  }
  if (panelToggle) panelToggle.addEventListener("click", function () { openDrawer(!document.body.classList.contains("drawer-open")); });
  const panelClose = $("panel-close");
  if (panelClose) panelClose.addEventListener("click", function () { openDrawer(false); });

  // ---- selection and shape edits ---------------------------------------------
  anno.on("selectAnnotation", function (a) {
    const r = byAnnoId(a.id);
    if (r && r.terapan.id !== selected) select(r.terapan.id, false);
  });

  if (cfg.canReview) {
    // A drawn shape becomes a region at once; the side panel takes comments.
    anno.on("createSelection", async function (selection) {
      showError("");
      const target = JSON.parse(JSON.stringify(selection.target));
      // Drop the drawn selection and leave drawing mode before the round trip: a
      // selection left live while the request runs made Annotorious throw
      // "e.getAttribute is not a function" on the next pointer move (to "Comment").
      anno.cancelSelected();
      setTool(null);
      try {
        const created = await T.api(cfg.api.annotations, {
          method: "POST",
          body: { target: target, version: cfg.pyramid.version, body: [] },
        });
        if (!byId(created.terapan.id)) { replace(created); anno.addAnnotation(created); }
        renderList();
        await select(created.terapan.id, false);
        if (box && !T.isNarrow()) box.focus();
      } catch (e) {
        showError("Could not save the region: " + e.message);
      }
    });

    // Move, resize, polygon points: saved shortly after the last change.
    let pendingTarget = null, saveTimer = null;
    anno.on("changeSelectionTarget", function (target) {
      const r = byId(selected);
      if (!r || !r.terapan.canModify) return;
      editingShape = r.id;
      pendingTarget = { region: r.terapan.id, annoId: r.id, target: JSON.parse(JSON.stringify(target)) };
      if (saveTimer) clearTimeout(saveTimer);
      saveTimer = setTimeout(function () { saveTimer = null; anno.saveSelected(); }, SAVE_SHAPE_MS);
    });
    anno.on("updateAnnotation", function (annotation) {
      const r = byAnnoId(annotation.id);
      if (r) persistShape(r.terapan.id, annotation.id, annotation.target, true);
    });
    // Clicking elsewhere before the save: keep the change anyway.
    anno.on("cancelSelected", function () {
      if (saveTimer) { clearTimeout(saveTimer); saveTimer = null; }
      if (pendingTarget) persistShape(pendingTarget.region, pendingTarget.annoId, pendingTarget.target, false);
    });
    async function persistShape(regionId, annoId, target, reselect) {
      pendingTarget = null;
      try {
        const saved = await T.api(urlFor("annotation", regionId), {
          method: "PATCH",
          body: { target: { selector: target.selector } },
        });
        replace(saved);
        editingShape = null;
        anno.addAnnotation(saved);
        if (reselect && selected === regionId) { try { anno.selectAnnotation(annoId); } catch (e) { /* gone */ } }
        if (selected === regionId) renderDetail(saved);
        renderList();
        document.body.dataset.shapeSaves = String(parseInt(document.body.dataset.shapeSaves || "0", 10) + 1);
      } catch (err) {
        editingShape = null;
        showError("Could not save the new shape: " + err.message);
      }
    }

    const tools = document.querySelectorAll("#draw-tools button");
    function setTool(name) {
      tools.forEach(function (b) { b.classList.toggle("active", b.dataset.tool === name); });
      document.body.classList.toggle("drawing", !!name);
      // While drawing, OpenSeadragon's buttons and minimap do not take the pointer.
      viewer.controls.forEach(function (c) { if (c.element) c.element.style.pointerEvents = name ? "none" : ""; });
      if (viewer.navigator && viewer.navigator.element) viewer.navigator.element.style.pointerEvents = name ? "none" : "";
      // The double-click that closes a polygon must not also zoom.
      viewer.gestureSettingsMouse.dblClickToZoom = !name;
      viewer.gestureSettingsTouch.dblClickToZoom = !name;
      if (name) {
        anno.setDrawingTool(name);
        anno.setDrawingEnabled(true);
      } else {
        anno.setDrawingEnabled(false);
      }
    }
    T.setTool = setTool;

    // Resizing or moving the selected region by finger: OpenSeadragon sees the
    // touch's pointer events before Annotorious sees its touch events, and
    // panned the image under the finger, eating much of the change. No panning
    // while a finger holds the selected shape or one of its handles, nor a
    // flick when it lets go (restored after OpenSeadragon's drag-end).
    let holdingShape = false;
    const touchPan = { dragToPan: viewer.gestureSettingsTouch.dragToPan, flickEnabled: viewer.gestureSettingsTouch.flickEnabled };
    window.addEventListener("pointerdown", function (e) {
      if (e.pointerType !== "touch" || !e.target.closest) return;
      if (e.target.closest(".a9s-annotation.selected")) {
        holdingShape = true;
        viewer.gestureSettingsTouch.dragToPan = false;
        viewer.gestureSettingsTouch.flickEnabled = false;
      }
    }, true);
    function releaseShape() {
      if (!holdingShape) return;
      holdingShape = false;
      setTimeout(function () { Object.assign(viewer.gestureSettingsTouch, touchPan); }, 0);
    }
    window.addEventListener("pointerup", releaseShape, true);
    window.addEventListener("pointercancel", releaseShape, true);

    // Polygons by finger: Annotorious turns a tap into mousedown/mouseup but adds
    // a polygon corner where the last mousemove was, and a tap sends none, so
    // every tap after the first was lost. Move the rubber band to the finger
    // first; a double tap closes the polygon as a double-click does.
    const layer = viewer.canvas.querySelector("svg.a9s-annotationlayer");
    let lastTap = null;
    function polygonDrawing() {
      const active = document.querySelector("#draw-tools button.active");
      return !!active && active.dataset.tool === "polygon";
    }
    function mouseAt(type, touch) {
      layer.dispatchEvent(new MouseEvent(type, { clientX: touch.clientX, clientY: touch.clientY, bubbles: true, cancelable: true }));
    }
    if (layer) {
      layer.addEventListener("touchstart", function (e) {
        if (polygonDrawing() && e.touches.length === 1) mouseAt("mousemove", e.touches[0]);
      }, true);
      layer.addEventListener("touchend", function (e) {
        const t = e.changedTouches[0];
        if (!t || !polygonDrawing()) { lastTap = null; return; }
        const now = Date.now();
        if (lastTap && now - lastTap.time < 450 && Math.hypot(t.clientX - lastTap.x, t.clientY - lastTap.y) < 24) {
          lastTap = null;
          mouseAt("dblclick", t);
        } else {
          lastTap = { time: now, x: t.clientX, y: t.clientY };
        }
      }, true);
    }

    tools.forEach(function (b) {
      b.addEventListener("click", function () {
        setTool(b.classList.contains("active") ? null : b.dataset.tool);
      });
    });
    document.addEventListener("keydown", function (e) {
      if (e.key === "Escape" && document.body.classList.contains("drawing")) { anno.cancelSelected(); setTool(null); }
    });

    if (form) {
      $("reply-cancel").addEventListener("click", function () { replyTo = null; updateReplyTo(); });
      form.addEventListener("submit", async function (e) {
        e.preventDefault();
        const body = box.value.trim();
        if (!selected || !body) return;
        showError("");
        try {
          const payload = { body: body };
          if (replyTo) payload.parent = replyTo;
          await T.api(urlFor("comments", selected), { method: "POST", body: payload });
          box.value = "";
          replyTo = null;
          updateReplyTo();
          if (suggest) suggest.hidden = true;
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
          setRegionInLink(null);
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
          renderList();
          renderDetail(r);
        } catch (err) {
          showError("Could not change the status: " + err.message);
        }
      });
    });
  }

  if (filter) filter.addEventListener("change", renderList);
  viewer.addHandler("open", load);
  if (viewer.world.getItemCount()) load();
  schedule();
})();
