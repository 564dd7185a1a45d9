/* Slugs filled in from names: in a form with a `name` and an editable `slug` input, typing the
 * name writes its slug ("Trial activation" → "trial-activation") until the slug is edited by hand.
 * Without JavaScript the slug is typed as before; the server validates it either way.
 */
(function () {
  "use strict";

  function slugify(text, limit) {
    var slug = text.normalize("NFKD").replace(/[\u0300-\u036f]/g, "").toLowerCase()
      .replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "");
    return limit > 0 ? slug.slice(0, limit).replace(/-+$/, "") : slug;
  }

  function wire(root) {
    if (!root.querySelectorAll) return;
    Array.prototype.forEach.call(root.querySelectorAll("form"), function (form) {
      var name = form.querySelector("input[name=name]");
      var slug = form.querySelector("input[name=slug]");
      if (!name || !slug || slug.disabled || slug.readOnly || form.dataset.slugFromName) return;
      form.dataset.slugFromName = "on";
      var follow = slug.value === "" || slug.value === slugify(name.value, slug.maxLength);
      slug.addEventListener("input", function () { follow = slug.value === ""; });
      name.addEventListener("input", function () {
        if (follow) slug.value = slugify(name.value, slug.maxLength);
      });
    });
  }

  if (window.htmx) {
    window.htmx.onLoad(wire);
  } else {
    document.addEventListener("DOMContentLoaded", function () { wire(document); });
  }
})();
