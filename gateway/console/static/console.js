/* lgw console: live partials, confirmation dialogs, CSRF header. Our own, no dependencies.
 *
 * - <div data-refresh="URL" data-every="N">: fetched every N seconds (header
 *   X-Console-Partial: 1) and its content replaced by the server's partial HTML. 401: to the
 *   login page. A failure keeps the old content and marks the element stale. Paused while
 *   the tab is hidden.
 * - <form data-confirm="question">: asks in a native <dialog> (focus on Cancel) first.
 * - send(url, options): fetch for state-changing calls, with X-CSRF-Token from
 *   <meta name="csrf-token">.
 */
(function () {
  "use strict";

  var PREFIX = "/console";

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") || "" : "";
  }

  function send(url, options) {
    options = options || {};
    var headers = new Headers(options.headers || {});
    headers.set("X-CSRF-Token", csrfToken());
    options.headers = headers;
    options.credentials = "same-origin";
    return fetch(url, options);
  }

  function toLogin() {
    var next = window.location.pathname + window.location.search;
    window.location.assign(PREFIX + "/login?next=" + encodeURIComponent(next));
  }

  /* ---------------------------------------------------------------- live partials */
  function staleNote(el) {
    var note = el.previousElementSibling;
    if (note && note.classList.contains("stale-note")) {
      return note;
    }
    note = document.createElement("p");
    note.className = "stale-note warn";
    note.setAttribute("role", "status");
    el.parentNode.insertBefore(note, el);
    return note;
  }

  function markStale(el, why) {
    el.classList.add("stale");
    el.setAttribute("aria-busy", "false");
    var note = staleNote(el);
    note.hidden = false;
    note.textContent = "Stale: could not refresh (" + why + "); showing figures from " +
      (el.dataset.refreshedAt || "page load") + ".";
  }

  function markFresh(el) {
    el.classList.remove("stale");
    el.dataset.refreshedAt = new Date().toLocaleTimeString();
    var note = el.previousElementSibling;
    if (note && note.classList.contains("stale-note")) {
      note.hidden = true;
      note.textContent = "";
    }
  }

  function refresh(el) {
    if (el.dataset.inFlight === "1") {
      return Promise.resolve();
    }
    var url = new URL(el.dataset.refresh, window.location.href);
    if (url.origin !== window.location.origin) {
      markStale(el, "not this console's address");  /* only our own server's partials go into the page */
      return Promise.resolve();
    }
    el.dataset.inFlight = "1";
    return fetch(url.href, {headers: {"X-Console-Partial": "1"}, credentials: "same-origin",
                                      cache: "no-store"})
      .then(function (response) {
        if (response.status === 401) {
          toLogin();
          return;
        }
        if (response.status === 404 && el.dataset.missing) {
          el.textContent = "";
          var p = document.createElement("p");
          p.className = "muted";
          p.textContent = el.dataset.missing;
          el.appendChild(p);
          markFresh(el);
          return;
        }
        if (!response.ok) {
          markStale(el, "HTTP " + response.status);
          return;
        }
        return response.text().then(function (html) {
          el.innerHTML = html; /* our own server's partial, rendered autoescaped */
          markFresh(el);
        });
      })
      .catch(function () {
        markStale(el, "no answer");
      })
      .then(function () {
        el.dataset.inFlight = "0";
      });
  }

  function startRefreshing() {
    var live = Array.prototype.slice.call(document.querySelectorAll("[data-refresh]"));
    live.forEach(function (el) {
      var every = parseFloat(el.dataset.every || "0");
      if (!(every > 0)) {
        if (el.dataset.missing) {
          refresh(el);
        }
        return;
      }
      el.dataset.refreshedAt = new Date().toLocaleTimeString();
      var timer = null;
      function schedule() {
        if (timer === null && !document.hidden) {
          timer = window.setInterval(function () { refresh(el); }, every * 1000);
        }
      }
      function pause() {
        if (timer !== null) {
          window.clearInterval(timer);
          timer = null;
        }
      }
      document.addEventListener("visibilitychange", function () {
        if (document.hidden) {
          pause();
        } else {
          refresh(el);
          schedule();
        }
      });
      if (el.dataset.missing) {
        refresh(el);
      }
      schedule();
    });
  }

  /* ---------------------------------------------------------------- confirmations */
  var dialog = null;

  function confirmDialog() {
    if (dialog !== null) {
      return dialog;
    }
    dialog = document.createElement("dialog");
    dialog.className = "confirm";
    dialog.setAttribute("aria-labelledby", "confirm-question");
    var question = document.createElement("p");
    question.id = "confirm-question";
    var buttons = document.createElement("form");
    buttons.method = "dialog";
    buttons.className = "buttons";
    var cancel = document.createElement("button");
    cancel.type = "submit";
    cancel.value = "cancel";
    cancel.textContent = "Cancel";
    cancel.className = "cancel";
    var ok = document.createElement("button");
    ok.type = "submit";
    ok.value = "confirm";
    ok.textContent = "Confirm";
    ok.className = "confirm-ok";
    buttons.appendChild(cancel);
    buttons.appendChild(ok);
    dialog.appendChild(question);
    dialog.appendChild(buttons);
    document.body.appendChild(dialog);
    return dialog;
  }

  function ask(question, onYes) {
    var d = confirmDialog();
    d.querySelector("#confirm-question").textContent = question;
    d.returnValue = "";
    d.onclose = function () {
      if (d.returnValue === "confirm") {
        onYes();
      }
    };
    d.showModal();
    d.querySelector("button.cancel").focus();
  }

  function guardForms() {
    document.addEventListener("submit", function (event) {
      var form = event.target;
      if (!(form instanceof HTMLFormElement) || !form.dataset.confirm) {
        return;
      }
      if (form.dataset.confirmed === "1") {
        form.dataset.confirmed = "";
        return;
      }
      event.preventDefault();
      var submitter = event.submitter || null;
      ask(form.dataset.confirm, function () {
        form.dataset.confirmed = "1";
        if (form.requestSubmit) {
          form.requestSubmit(submitter && submitter.form === form ? submitter : undefined);
        } else {
          form.submit();
        }
      });
    });
  }

  window.lgwConsole = {send: send, refresh: refresh};

  function start() {
    guardForms();
    startRefreshing();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
}());
