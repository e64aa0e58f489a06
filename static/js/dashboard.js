/*
 * TenantML dashboard: how its live parts behave on top of htmx (loaded before this file).
 *
 * - A refused form answers 422 with the partial that says why; htmx swaps it like a 200.
 * - A polling part (an element whose hx-trigger polls "every ...") asks nothing while the tab is
 *   hidden, and refreshes at once when the tab is shown again.
 * - A poll never replaces a form the user is editing: no polling part holds a form field (a
 *   tenant's rollout poll answers only each model's status, buttons and versions, out of band).
 * - After a poll, one small polite live region (#live-announcer) says which figures changed
 *   ("Cost per hour now $0.46"): each announced figure carries an id and data-announce, its name.
 *
 * Every page still works without JavaScript: this only changes how htmx refreshes parts.
 */
(function () {
  "use strict";

  htmx.config.responseHandling = [
    { code: "204", swap: false },
    { code: "[23]..", swap: true },
    { code: "422", swap: true },
    { code: "[45]..", swap: false, error: true },
  ];

  var POLLING = /(^|,)\s*every\s/;

  function polls(element) {
    return Boolean(
      element && element.getAttribute && POLLING.test(element.getAttribute("hx-trigger") || "")
    );
  }

  function hidden() {
    return document.visibilityState === "hidden";
  }

  // --- The live region -----------------------------------------------------------------------

  function shownText(element) {
    return element.textContent.replace(/\s+/g, " ").trim();
  }

  function announcedFigures() {
    var figures = {};
    document.querySelectorAll("[data-announce][id]").forEach(function (element) {
      figures[element.id] = shownText(element);
    });
    return figures;
  }

  function announceChanges(before) {
    var region = document.getElementById("live-announcer");
    if (!region) {
      return;
    }
    var changes = [];
    document.querySelectorAll("[data-announce][id]").forEach(function (element) {
      var now = shownText(element);
      if (element.id in before && before[element.id] !== now) {
        changes.push(element.dataset.announce + " now " + now);
      }
    });
    if (changes.length) {
      region.textContent = changes.join(". ") + ".";
    }
  }

  // --- htmx events ---------------------------------------------------------------------------

  document.addEventListener("htmx:beforeRequest", function (event) {
    if (hidden() && polls(event.detail.elt)) {
      event.preventDefault(); // paused: nobody is looking
    }
  });

  document.addEventListener("htmx:beforeSwap", function (event) {
    var detail = event.detail;
    if (polls(detail.elt) && detail.shouldSwap) {
      detail.requestConfig.announcedBefore = announcedFigures();
    }
  });

  document.addEventListener("htmx:afterSwap", function (event) {
    var config = event.detail.requestConfig;
    if (config && config.announcedBefore) {
      var before = config.announcedBefore;
      config.announcedBefore = null; // afterSwap fires once per swapped element
      announceChanges(before);
    }
  });

  document.addEventListener("visibilitychange", function () {
    if (hidden()) {
      return;
    }
    document.querySelectorAll("[hx-trigger][hx-get]").forEach(function (element) {
      if (polls(element)) {
        htmx.ajax("GET", element.getAttribute("hx-get"), { source: element });
      }
    });
  });
})();
