// A small SVG line chart, for fine-tuning curves: chart({series, xLabel, yLabel, title}) -> <svg>.
//   series: [{name: "training", points: [[step, value], ...]}, ...] (points in x order)
// It scales to its container's width (a viewBox); colours are the page's CSS variables, so it follows the light
// and dark schemes; each series also has its own dash pattern and markers, so colour is not the only way to tell
// them apart. A screen reader hears the title and each series' last value.

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 340;
const HEIGHT = 220;
const MARGIN = { right: 12, bottom: 40, left: 48 };  // room for the tick labels and the axis labels
const TITLE_X = 4;
const ROW = 18;  // the height of the title's row, and of the legend's when it does not fit beside the title
const CHAR = { title: 7.8, legend: 6.6 };  // the mean width of a character, to lay out text before it is drawn
const COLOURS = ["--accent", "--star", "--ok", "--danger"];
const DASHES = [null, "6 4", "2 3", "8 3 2 3"];
const MARKERS_UP_TO = 40;  // points drawn as dots too, while few enough to tell apart
let ids = 0;

function s(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined) node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

// About `count` round tick values (1, 2 or 5 times a power of ten apart) covering [low, high].
function ticks(low, high, count, whole = false) {
  if (low === high) [low, high] = [low - (Math.abs(low) || 1) / 2, high + (Math.abs(high) || 1) / 2];
  const rough = (high - low) / count;
  const power = 10 ** Math.floor(Math.log10(rough));
  let step = [1, 2, 5, 10].map((m) => m * power).find((candidate) => candidate >= rough);
  if (whole) step = Math.max(1, Math.round(step));
  const values = [];
  for (let v = Math.floor(low / step) * step; v <= high + step / 2; v += step) values.push(Number(v.toPrecision(12)));
  if (values.at(-1) < high) values.push(values.at(-1) + step);
  return values;
}

const label = (value) => Number(value.toPrecision(4)).toLocaleString(undefined, { maximumFractionDigits: 4 });
const style = (i) => ({ colour: `var(${COLOURS[i % COLOURS.length]})`, dash: DASHES[i % DASHES.length] });

// The legend: right-aligned, beside the title when it fits there, else on a row of its own below it. Each entry is
// a short line in its series' style, then the series' name. Returns the group and the height it takes.
function legend(series, title) {
  const widths = series.map((one) => 24 + one.name.length * CHAR.legend);
  const width = widths.reduce((a, b) => a + b, 0) + 12 * (series.length - 1);
  const beside = TITLE_X + title.length * CHAR.title + 16 + width <= WIDTH - MARGIN.right;
  const y = beside ? ROW - 4 : 2 * ROW - 2;
  const group = s("g", { class: "chart-legend", "aria-hidden": "true" });
  let left = WIDTH - MARGIN.right - width;
  for (const [i, one] of series.entries()) {
    const { colour, dash } = style(i);
    group.append(s("line", { x1: left, x2: left + 18, y1: y - 4, y2: y - 4, class: "chart-line",
                             style: `stroke: ${colour}`, "stroke-dasharray": dash }),
                 s("text", { x: left + 24, y }, one.name));
    left += widths[i] + 12;
  }
  return [group, beside ? ROW : 2 * ROW];
}

export function chart({ series, xLabel = "", yLabel = "", title }) {
  const id = `chart-${++ids}`;
  const summary = series.map((one) => {
    const last = one.points.at(-1);
    return last ? `${one.name}: ${label(last[1])} at ${xLabel || "x"} ${label(last[0])}` : `${one.name}: no data yet`;
  }).join("; ");
  const svg = s("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, class: "chart", role: "img",
                         "aria-labelledby": `${id}-title ${id}-desc` },
                s("title", { id: `${id}-title` }, title),
                s("desc", { id: `${id}-desc` }, summary),
                s("text", { x: TITLE_X, y: ROW - 4, class: "chart-title" }, title));
  const [key, keyHeight] = legend(series, title);
  const plot = { left: MARGIN.left, right: WIDTH - MARGIN.right, top: keyHeight + 16, bottom: HEIGHT - MARGIN.bottom };
  const points = series.flatMap((one) => one.points);
  if (!points.length) {
    svg.append(s("text", { x: (plot.left + plot.right) / 2, y: (plot.top + plot.bottom) / 2, class: "chart-empty",
                           "text-anchor": "middle" }, "No data yet"));
    return svg;
  }
  svg.append(key);

  const xs = ticks(Math.min(...points.map((p) => p[0])), Math.max(...points.map((p) => p[0])), 6, true);
  const ys = ticks(Math.min(...points.map((p) => p[1])), Math.max(...points.map((p) => p[1])), 4);
  const x = (v) => plot.left + ((v - xs[0]) / (xs.at(-1) - xs[0])) * (plot.right - plot.left);
  const y = (v) => plot.bottom - ((v - ys[0]) / (ys.at(-1) - ys[0])) * (plot.bottom - plot.top);

  const grid = s("g", { class: "chart-grid", "aria-hidden": "true" });
  for (const v of ys) {
    grid.append(s("line", { x1: plot.left, x2: plot.right, y1: y(v), y2: y(v) }),
                s("text", { x: plot.left - 6, y: y(v), "text-anchor": "end", "dominant-baseline": "middle" },
                  label(v)));
  }
  for (const v of xs) {
    grid.append(s("line", { x1: x(v), x2: x(v), y1: plot.bottom, y2: plot.bottom + 4 }),
                s("text", { x: x(v), y: plot.bottom + 16, "text-anchor": "middle" }, label(v)));
  }
  grid.append(s("line", { class: "chart-axis", x1: plot.left, x2: plot.right, y1: plot.bottom, y2: plot.bottom }),
              s("line", { class: "chart-axis", x1: plot.left, x2: plot.left, y1: plot.top, y2: plot.bottom }),
              s("text", { class: "chart-axis-label", x: (plot.left + plot.right) / 2, y: HEIGHT - 6,
                          "text-anchor": "middle" }, xLabel),
              s("text", { class: "chart-axis-label", x: 0, y: 0, "text-anchor": "middle",
                          transform: `translate(14 ${(plot.top + plot.bottom) / 2}) rotate(-90)` }, yLabel));
  svg.append(grid);

  for (const [i, one] of series.entries()) {
    if (!one.points.length) continue;
    const { colour, dash } = style(i);
    const line = one.points.map(([px, py], k) => `${k ? "L" : "M"}${x(px).toFixed(1)},${y(py).toFixed(1)}`).join("");
    const group = s("g", { class: "chart-series", "aria-hidden": "true" },
                    s("path", { d: line, class: "chart-line", style: `stroke: ${colour}`, "stroke-dasharray": dash }));
    if (one.points.length <= MARKERS_UP_TO) {
      for (const [px, py] of one.points) {
        group.append(s("circle", { cx: x(px), cy: y(py), r: 3, class: "chart-dot", style: `fill: ${colour}` },
                       s("title", {}, `${one.name}: ${label(py)} at ${xLabel || "x"} ${label(px)}`)));
      }
    }
    svg.append(group);
  }
  return svg;
}
