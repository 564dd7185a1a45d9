/* Onramp dashboard behaviour. Pages work without it; it draws Plotly charts.
 *
 * A chart is a <div data-plotly-figure="ID"> next to a json_script element with that ID holding
 * {data, layout, config}. htmx.onLoad runs for the first page load and for every swapped-in
 * fragment, so charts in htmx partials are drawn too.
 */
(function () {
  "use strict";

  function drawCharts(root) {
    if (!window.Plotly || !root.querySelectorAll) return;
    var charts = Array.prototype.slice.call(root.querySelectorAll("[data-plotly-figure]"));
    if (root.matches && root.matches("[data-plotly-figure]")) charts.push(root);
    charts.forEach(function (element) {
      var source = document.getElementById(element.dataset.plotlyFigure);
      if (!source) return;
      var figure = JSON.parse(source.textContent);
      window.Plotly.newPlot(element, figure.data, figure.layout, figure.config);
    });
  }

  if (window.htmx) {
    window.htmx.onLoad(drawCharts);
  } else {
    document.addEventListener("DOMContentLoaded", function () { drawCharts(document); });
  }
})();
