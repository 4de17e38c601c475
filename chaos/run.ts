/**
 * `npm run chaos [-- --seed N] [--mode message|batch|lanes] [--events N] [--reduced] [--cluster] [--timeout-minutes N]`
 *
 * The full run: 50,000 events, a group of 3 consumer processes, a SIGKILL every ~3 s (at least 15),
 * 2 broker restarts, 5 rounds of pg_terminate_backend, a fourth consumer joining and one leaving.
 * Prints a summary and exits 1 on any violation. The seed decides the workload and the faults'
 * choices (which consumer dies, jitter); the moments faults land relative to the work depend on
 * the machine's speed, so a replay repeats the scenario, not every interleaving. `--mode lanes`
 * runs message mode with per-key lanes over many accounts, a few of them hot. `--cluster` runs on a
 * three-node cluster (replication factor 3, min.insync.replicas 2) and, instead of restarting the
 * broker, SIGKILLs the leader of a consumed partition, the group coordinator's node and the active
 * controller 3 times each (1 leader and 1 coordinator kill when reduced), restarting each.
 */
import { Command, Option } from 'commander';

import { formatSummary, runChaos } from './chaos.js';

const program = new Command('chaos')
  .addOption(new Option('--seed <n>', 'replay a run').argParser((v) => Number.parseInt(v, 10)))
  .addOption(new Option('--mode <mode>', 'consumer mode').choices(['message', 'batch', 'lanes']).default('message'))
  .addOption(new Option('--events <n>', 'unique events').argParser((v) => Number.parseInt(v, 10)))
  .addOption(
    new Option('--timeout-minutes <n>', 'the whole run must finish within this (default 9, reduced 3)').argParser((v) =>
      Number.parseFloat(v),
    ),
  )
  .option('--reduced', 'the short run of npm test: 5,000 events, 5 kills, 1 broker restart')
  .option('--cluster', 'a three-node cluster; leaders, the group coordinator and the controller are killed')
  .parse();

const options = program.opts<{
  seed?: number;
  mode: 'message' | 'batch' | 'lanes';
  events?: number;
  reduced?: boolean;
  cluster?: boolean;
  timeoutMinutes?: number;
}>();
const seed = options.seed ?? Math.floor(Math.random() * 1_000_000);
const reduced = options.reduced === true;
console.log(
  `seed ${seed} (replay with: npm run chaos -- --seed ${seed}${reduced ? ' --reduced' : ''}${options.cluster === true ? ' --cluster' : ''} --mode ${options.mode})`,
);

const summary = await runChaos({
  seed,
  mode: options.mode,
  events: options.events ?? (reduced ? 5_000 : 50_000),
  kills: reduced ? 5 : 15,
  killEveryMs: reduced ? 2_500 : 3_000,
  brokerRestarts: reduced ? 1 : 2,
  connectionKillRounds: reduced ? 2 : 5,
  timeoutMs: (options.timeoutMinutes ?? (reduced ? 3 : options.cluster === true ? 14 : 9)) * 60_000,
  ...(options.cluster === true
    ? {
        cluster: reduced
          ? { leaderKills: 1, coordinatorKills: 1, controllerKills: 0 }
          : { leaderKills: 3, coordinatorKills: 3, controllerKills: 3 },
      }
    : {}),
});
console.log(`\n${formatSummary(summary)}`);
process.exitCode = summary.violations.length === 0 ? 0 : 1;
