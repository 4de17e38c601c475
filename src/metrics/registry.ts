/**
 * What every oncely metric module shares: loading the optional prom-client peer, validating a
 * `metrics` option, and registering a metric once per registry (prom-client refuses a second
 * registration of a name, and several consumers, relays or routes may share one registry).
 */
import { createRequire } from 'node:module';

import type * as PromClient from 'prom-client';
import { z } from 'zod';

import { configError, OncelyError } from '../errors.js';

/** Loads prom-client, or says how to install it. `option` names the option that needs it. */
export function loadPromClient(option = 'metrics'): typeof PromClient {
  try {
    return createRequire(import.meta.url)('prom-client') as typeof PromClient;
  } catch (error) {
    throw new OncelyError(
      'ONCELY_CONFIG',
      `Invalid option \`${option}\`: it needs the prom-client package, which is not installed. Run \`npm install prom-client\`.`,
      { cause: error, context: { option } },
    );
  }
}

/** Whether `value` is a prom-client `Registry` (any copy of prom-client: checked by shape). */
function isRegistry(value: unknown): value is PromClient.Registry {
  const r = value as { registerMetric?: unknown; metrics?: unknown } | null | undefined;
  return (
    typeof r === 'object' && r !== null && typeof r.registerMetric === 'function' && typeof r.metrics === 'function'
  );
}

const NOT_A_REGISTRY = "expected a prom-client Registry: `new Registry()` from 'prom-client'";

/** The `registry` of every `metrics` option, in the options' schemas (src/options.ts). */
export const registrySchema = z.custom<PromClient.Registry>(isRegistry, { message: NOT_A_REGISTRY });

/** Refuses anything but a prom-client `Registry` (any copy of prom-client: checked by shape). */
export function assertRegistry(option: string, registry: unknown): asserts registry is PromClient.Registry {
  if (!isRegistry(registry)) throw configError(`${option}.registry`, NOT_A_REGISTRY);
}

/**
 * The metric `name` of `registry`, made by `create` the first time only. Sharing by name is safe
 * because oncely owns the `oncely_` names: the second caller gets the first caller's metric, with
 * the same labels, and adds its own series.
 */
export function registeredOnce<M extends PromClient.Metric>(
  registry: PromClient.Registry,
  name: string,
  create: () => M,
): M {
  return (registry.getSingleMetric(name) as M | undefined) ?? create();
}
