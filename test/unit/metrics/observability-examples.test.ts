import { readFileSync } from 'node:fs';

import { describe, expect, it } from 'vitest';

import { METRIC_NAMES } from '../../../src/metrics/prometheus.js';

const read = (file: string): string =>
  readFileSync(new URL(`../../../examples/observability/${file}`, import.meta.url), 'utf8');

/** The metric each `oncely_*` name in a PromQL text refers to (histogram series reduced to their metric). */
function metricsUsedIn(promql: string): string[] {
  return [...promql.matchAll(/\boncely_[a-z_]+/g)].map((m) => m[0].replace(/_(bucket|sum|count)$/, ''));
}

interface Dashboard {
  readonly panels: readonly { readonly title: string; readonly targets: readonly { readonly expr: string }[] }[];
  readonly templating: { readonly list: readonly { readonly definition?: string }[] };
}

describe('the shipped dashboard and alert rules', () => {
  const dashboard = JSON.parse(read('dashboard.json')) as Dashboard;
  const dashboardQueries = [
    ...dashboard.panels.flatMap((p) => p.targets.map((t) => t.expr)),
    ...dashboard.templating.list.flatMap((v) => (v.definition === undefined ? [] : [v.definition])),
  ];

  it('uses only metric names oncely registers in its dashboard', () => {
    const used = new Set(dashboardQueries.flatMap(metricsUsedIn));
    expect(used.size).toBeGreaterThan(0);
    expect([...used].filter((name) => !(METRIC_NAMES as readonly string[]).includes(name))).toEqual([]);
  });

  it('shows every metric oncely registers on the dashboard', () => {
    const used = new Set(dashboardQueries.flatMap(metricsUsedIn));
    expect(METRIC_NAMES.filter((name) => !used.has(name))).toEqual([]);
  });

  it('uses only metric names oncely registers in its alert rules', () => {
    const used = new Set(metricsUsedIn(read('alerts.yml')));
    expect(used.size).toBeGreaterThan(0);
    expect([...used].filter((name) => !(METRIC_NAMES as readonly string[]).includes(name))).toEqual([]);
  });
});
