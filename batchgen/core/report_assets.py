"""The inline stylesheet and script of the HTML report (kept apart so report.py reads as layout logic)."""

from __future__ import annotations

from batchgen.core.jobs import JobStatus

CSS = """
:root { color-scheme: light dark; --bg: #f6f6f4; --fg: #1d1d1f; --muted: #6b6b70; --line: #d9d9d6;
  --card: #fff; --ok: #1a7f37; --bad: #c62828; --wait: #8a6d00; --head: #ecece8; }
@media (prefers-color-scheme: dark) { :root { --bg: #161618; --fg: #e8e8ea; --muted: #9a9aa0;
  --line: #333338; --card: #202024; --ok: #4ac26b; --bad: #ff6b6b; --wait: #d8b23a; --head: #26262b; } }
* { box-sizing: border-box; }
body { margin: 0; padding: 20px 24px 40px; background: var(--bg); color: var(--fg);
  font: 14px/1.4 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; }
h1 { font-size: 20px; margin: 0 0 12px; }
h2 { font-size: 15px; margin: 28px 0 8px; }
.summary { display: flex; flex-wrap: wrap; gap: 8px 28px; align-items: baseline; padding: 12px 16px;
  background: var(--card); border: 1px solid var(--line); border-radius: 8px; }
.summary dl { display: contents; }
.summary div { display: flex; flex-direction: column; }
.summary dt { color: var(--muted); font-size: 12px; }
.summary dd { margin: 0; font-size: 16px; font-variant-numeric: tabular-nums; }
.summary.money { margin-top: 8px; }
.unused { margin: 8px 0 0; padding: 10px 16px; border: 2px solid #c0392b; border-radius: 8px; background: #fdecea;
  color: #5b1a12; font-size: 13px; }
.unused ul { margin: 6px 0 0; padding-left: 18px; }
.fixed { color: var(--muted); margin: 8px 2px 0; font-size: 12px; word-break: break-word; }
.filters { margin: 12px 2px 0; display: flex; flex-wrap: wrap; gap: 4px 16px; font-size: 13px; }
.filters label { cursor: pointer; user-select: none; }
.scroll { overflow-x: auto; }
table.grid { border-collapse: separate; border-spacing: 0; }
.grid th { background: var(--head); font-weight: 600; font-size: 12px; padding: 6px 8px; text-align: left;
  vertical-align: top; border: 1px solid var(--line); }
.grid thead th { position: sticky; top: 0; z-index: 1; }
.grid th.corner { color: var(--muted); font-weight: 400; }
.grid th .clamp, .cap .clamp { display: -webkit-box; -webkit-box-orient: vertical; -webkit-line-clamp: 4;
  overflow: hidden; max-width: 260px; white-space: pre-wrap; word-break: break-word; }
.grid th[scope=row] { min-width: 120px; max-width: 240px; }
.grid td { padding: 6px; vertical-align: top; border: 1px solid var(--line); background: var(--card); }
.grid td.empty { color: var(--muted); text-align: center; vertical-align: middle; }
.repeats { display: flex; gap: 6px; }
figure.job { margin: 0; width: 240px; display: flex; flex-direction: column; gap: 4px; }
figure.job video, figure.job img, .placeholder { width: 240px; aspect-ratio: 16 / 9; border-radius: 4px;
  background: #000; object-fit: contain; display: block; }
.placeholder { display: flex; align-items: center; justify-content: center; text-align: center; padding: 8px;
  background: var(--head); color: var(--muted); font-size: 12px; overflow: hidden; }
.placeholder.failed { background: color-mix(in srgb, var(--bad) 12%, var(--card)); color: var(--bad);
  align-items: flex-start; justify-content: flex-start; text-align: left; overflow: auto; word-break: break-word; }
.placeholder.failed b { display: block; }
.cap { font-size: 11px; color: var(--muted); }
.cap .clamp { -webkit-line-clamp: 2; max-width: 240px; color: var(--fg); }
.badge { display: inline-block; padding: 0 5px; border-radius: 3px; font-size: 10px; font-weight: 600;
  text-transform: uppercase; letter-spacing: .03em; border: 1px solid currentColor; }
.st-succeeded .badge { color: var(--ok); }
.st-failed .badge, .st-cancelled .badge, .st-unknown .badge { color: var(--bad); }
.badge.waiting { color: var(--wait); }
details { margin-top: 2px; }
details summary { cursor: pointer; }
details dl { margin: 4px 0 0; display: grid; grid-template-columns: auto 1fr; gap: 1px 8px; }
details dt { color: var(--muted); }
details dd { margin: 0; color: var(--fg); white-space: pre-wrap; word-break: break-word; }
.grid tr.later td { border: none; background: none; padding: 0; }
nav.pages { margin: 12px 2px; display: flex; flex-wrap: wrap; gap: 4px 10px; font-size: 13px; }
.paged { color: var(--muted); margin: 12px 2px 0; font-size: 13px; }
ol.pages { margin: 0; padding-left: 28px; columns: 18em; font-size: 13px; }
ol.pages .count { color: var(--muted); font-size: 11px; }
""" + "".join(f"body.hide-{s} figure.job.st-{s} {{ display: none; }}\n" for s in JobStatus)

# Status filters: unticking a status hides its jobs (rules in CSS); videos play on hover (contact-sheet style).
# A page opens at any size: table rows kept as data (tr.later) are drawn as they come within 1500 px of the window,
# and a video loads its first frame only within 2000 px (it is preload="none" until then); images are
# loading="lazy". `window.batchgenReveal(root)` does for new figures what the page did for its own (the live
# gallery calls it), and "batchgen:drawn" tells who cares which rows were just drawn.
JS = """
(function () {
  document.querySelectorAll(".filters input[data-status]").forEach(function (box) {
    box.addEventListener("change", function () {
      document.body.classList.toggle("hide-" + box.dataset.status, !box.checked);
    });
  });
  var watching = "IntersectionObserver" in window;
  function load(video) { video.preload = "metadata"; video.load(); }
  var videos = watching && new IntersectionObserver(function (entries) {
    entries.forEach(function (entry) {
      if (entry.isIntersecting) { videos.unobserve(entry.target); load(entry.target); }
    });
  }, {rootMargin: "2000px 0px"});
  function reveal(root) {
    root.querySelectorAll("figure.job video").forEach(function (video) {
      video.addEventListener("mouseenter", function () { video.play().catch(function () {}); });
      video.addEventListener("mouseleave", function () { video.pause(); });
      if (video.preload === "none") { if (videos) { videos.observe(video); } else { load(video); } }
    });
  }
  function draw(placeholder) {
    var holder = document.createElement("template");
    holder.innerHTML = JSON.parse(placeholder.querySelector("script").textContent);
    var rows = Array.prototype.slice.call(holder.content.children);
    placeholder.replaceWith.apply(placeholder, rows);
    rows.forEach(reveal);
    document.dispatchEvent(new CustomEvent("batchgen:drawn", {detail: rows}));
  }
  var later = watching && new IntersectionObserver(function (entries) {
    entries.forEach(function (entry) {
      if (entry.isIntersecting) { later.unobserve(entry.target); draw(entry.target); }
    });
  }, {rootMargin: "1500px 0px"});
  reveal(document);
  document.querySelectorAll("tr.later").forEach(function (row) {
    row.style.height = Number(row.dataset.rows) * 240 + "px";
    if (later) { later.observe(row); } else { draw(row); }
  });
  window.batchgenReveal = reveal;
})();
"""
