// An allocation page's log tail: appends the lines the server sends (a `lines` event holds
// [stream, text] pairs) as text, never as HTML, and shows the server's `note` when it has none.
"use strict";
(function () {
  const box = document.querySelector("[data-log]");
  if (!box || !window.EventSource) {
    return;
  }
  const note = document.querySelector(".log-note");
  const KEEP = 2000; // lines kept on the page; older ones leave it
  const source = new EventSource(box.getAttribute("data-log"));

  function add(text, className) {
    const line = document.createElement("div");
    line.textContent = text;
    if (className) {
      line.className = className;
    }
    box.appendChild(line);
  }

  source.addEventListener("lines", function (event) {
    const page = JSON.parse(event.data);
    const atBottom = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
    if (page.skipped) {
      add("… lines left out here (more than the page keeps up with): potluck logs has them all", "skipped");
    }
    page.lines.forEach(function (pair) {
      add(pair[1], pair[0] === "stderr" ? "stderr" : "");
    });
    while (box.childElementCount > KEEP) {
      box.removeChild(box.firstChild);
    }
    if (atBottom) {
      box.scrollTop = box.scrollHeight;
    }
    box.setAttribute("data-updated", String(Date.now()));
  });
  source.addEventListener("note", function (event) {
    if (note) {
      note.textContent = event.data;
      note.hidden = !event.data;
    }
  });
  // The session ended (signed out, expired, the token changed): the server says so and stops.
  source.addEventListener("signed-out", function (event) {
    source.close();
    box.classList.add("stale");
    if (note) {
      note.textContent = event.data;
      note.hidden = false;
    }
  });
  source.addEventListener("error", function () {
    box.classList.add("stale");
    if (source.readyState === EventSource.CLOSED && note) {  // refused, e.g. too many live pages
      note.textContent = "The live log stopped here (too many of your pages open at once?): close some and reload this one.";
      note.hidden = false;
    }
  });
  source.addEventListener("open", function () {
    box.classList.remove("stale");
  });
})();
