import { type Html, html } from './html.js';

const WIDTH = 300;
const HEIGHT = 60;

/**
 * A small inline SVG: bars of messages processed per minute (from the inbox) and a line of the
 * group's total lag (sampled from Kafka each time the screen is read). No script, no library.
 */
export function lagChart(perMinute: readonly number[], lag: readonly number[]): Html {
  const maxRate = Math.max(1, ...perMinute);
  const barWidth = perMinute.length === 0 ? 0 : WIDTH / perMinute.length;
  const bars = perMinute.map((n, i) => {
    const h = (n / maxRate) * (HEIGHT - 4);
    return html`<rect
      class="bar"
      x="${(i * barWidth + 0.5).toFixed(1)}"
      y="${(HEIGHT - h).toFixed(1)}"
      width="${Math.max(1, barWidth - 1).toFixed(1)}"
      height="${h.toFixed(1)}"
      ><title>${n} processed</title></rect
    >`;
  });
  const maxLag = Math.max(1, ...lag);
  const step = lag.length <= 1 ? 0 : WIDTH / (lag.length - 1);
  const points = lag.map((n, i) => `${(i * step).toFixed(1)},${(HEIGHT - 2 - (n / maxLag) * (HEIGHT - 6)).toFixed(1)}`);
  const lastRate = perMinute.at(-1) ?? 0;
  return html`<svg
      class="chart"
      viewBox="0 0 ${WIDTH} ${HEIGHT}"
      preserveAspectRatio="none"
      role="img"
      aria-label="throughput and lag"
    >
      <line class="axis" x1="0" y1="${HEIGHT - 0.5}" x2="${WIDTH}" y2="${HEIGHT - 0.5}"></line>
      ${bars} ${lag.length > 1 ? html`<polyline class="lag" points="${points.join(' ')}"></polyline>` : ''}
    </svg>
    <div class="chart-legend">
      bars: processed per minute, last ${perMinute.length} min (now ${lastRate}, peak ${Math.max(0, ...perMinute)}) ·
      line: lag${lag.length > 0 ? ` (now ${lag.at(-1) ?? 0}, peak ${Math.max(...lag)})` : ' (no samples yet)'}
    </div>`;
}
