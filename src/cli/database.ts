import { loadMigrations, migrate, migrationStatus } from '../migrate/migrate.js';

export async function runMigrate(options: { databaseUrl: string; dryRun?: boolean }): Promise<void> {
  if (options.dryRun === true) {
    const { pending } = await migrationStatus(options.databaseUrl);
    const files = new Map((await loadMigrations()).map((m) => [m.id, m]));
    if (pending.length === 0) {
      process.stdout.write('-- nothing to apply: the oncely schema is current\n');
      return;
    }
    for (const { id, name } of pending) {
      process.stdout.write(
        `-- ${name}\nBEGIN;\n${files.get(id)?.sql.trim() ?? ''}\nINSERT INTO oncely.migrations (id, name) VALUES (${id}, '${name}');\nCOMMIT;\n\n`,
      );
    }
    process.stdout.write(
      '-- migrate() also creates schema oncely and table oncely.migrations first, under an advisory lock.\n',
    );
    return;
  }
  const { applied } = await migrate(options.databaseUrl);
  process.stdout.write(
    applied.length === 0 ? 'The oncely schema is current; nothing to apply.\n' : `Applied ${applied.join(', ')}.\n`,
  );
}
