/**
 * What every command shares about its output: a closed pipe ends the command quietly
 * (`oncely migrate --dry-run | head`), when to colour, stored errors printed readably, and a failure
 * as one line that says what to do.
 */
import Table from 'cli-table3';

/**
 * A reader that went away (`| head`, `| less` quit) is not an error: exit quietly, with success,
 * as Unix tools do. Any other write error is reported as usual.
 */
export function exitQuietlyOnClosedPipe(stream: NodeJS.WriteStream = process.stdout): void {
  stream.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code === 'EPIPE') process.exit(0);
    throw error;
  });
}

/**
 * Whether a command colours what it writes to `stream`: the one place that decides, for every
 * command. `NO_COLOR` (non-empty) turns colour off whatever else is set; `FORCE_COLOR` turns it
 * on, even into a pipe or a file, unless it is `0` or `false`; otherwise only a terminal (not
 * `TERM=dumb`) gets colour. See no-color.org and force-color.org.
 */
export function colourEnabled(
  stream: Pick<NodeJS.WriteStream, 'isTTY'> = process.stdout,
  env: NodeJS.ProcessEnv = process.env,
): boolean {
  if (env.NO_COLOR !== undefined && env.NO_COLOR !== '') return false;
  const force = env.FORCE_COLOR;
  if (force !== undefined && force !== '') return !['0', 'false'].includes(force.toLowerCase());
  return stream.isTTY === true && env.TERM !== 'dumb';
}

/** ANSI colour when {@link colourEnabled} says so; plain text otherwise. */
export function colours(
  stream: Pick<NodeJS.WriteStream, 'isTTY'> = process.stdout,
  env: NodeJS.ProcessEnv = process.env,
) {
  const on = colourEnabled(stream, env);
  const paint =
    (code: number) =>
    (text: string): string =>
      on ? `\u001b[${code}m${text}\u001b[0m` : text;
  return { green: paint(32), yellow: paint(33), red: paint(31), bold: paint(1), dim: paint(2) };
}

/**
 * A cli-table3 table for stdout. Its colour library decides by itself (and colours a pipe), so the
 * style is set from {@link colourEnabled}: plain borders and headings unless colour is on.
 */
export function table(head: string[], stream: Pick<NodeJS.WriteStream, 'isTTY'> = process.stdout) {
  return new Table({
    head,
    style: colourEnabled(stream) ? { head: ['cyan'], border: ['grey'] } : { head: [], border: [] },
  });
}

/** Dead-letter ids are PostgreSQL bigints: positive whole numbers. */
export function parseDeadLetterId(id: string): string {
  if (!/^[1-9]\d{0,18}$/.test(id) || BigInt(id) > 9_223_372_036_854_775_807n) {
    throw new Error(
      `"${id}" is not a dead-letter id: ids are positive whole numbers, as \`oncely dead-letters list\` shows them.`,
    );
  }
  return id;
}
