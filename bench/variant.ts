/**
 * One variant in a process of its own, so its CPU time and peak RSS are its alone. Runs compiled,
 * under plain Node (`npm run bench` builds it with bench/tsconfig.variant.json):
 * `node bench/dist/variant.js <name> '<config json>'`. Prints one result line on stdout
 * (RESULT_MARKER + JSON) and exits 1 when a correctness check failed.
 */
import { RESULT_MARKER, VARIANT_NAMES, type VariantConfig, type VariantName } from './protocol.js';
import { runVariant } from './variants.js';

const [name, json] = process.argv.slice(2);
if (!VARIANT_NAMES.includes(name as VariantName) || json === undefined) {
  console.error(`usage: variant.ts <${VARIANT_NAMES.join('|')}> '<config json>'`);
  process.exit(2);
}
const config = JSON.parse(json) as VariantConfig;
const result = await runVariant({ ...config, variant: name as VariantName });
process.stdout.write(`${RESULT_MARKER}${JSON.stringify(result)}\n`, () => {
  // Exit explicitly: a client library's lingering timer must not keep a finished variant alive.
  process.exit(result.problems.length === 0 ? 0 : 1);
});
