import DesklineCore
import Foundation
import Logging
import PostgresNIO

/// Deskline's tables and how they got there: numbered migrations, applied in order by
/// `deskline migrate` and recorded in `schema_migrations`; `serve` runs only against the version
/// this build was made for (docs/STORAGE.md, "PostgreSQL").
///
/// Every table but `schema_migrations` holds rows of one tenant each (`tenant_id`), and a
/// row-level security policy lets a transaction see only the rows of the tenant it named in
/// `deskline.tenant` (`*` for the few reads across tenants: the login lookup by email, the tenant
/// list and the event poll). A query that forgot its tenant sees nothing.
public enum Schema {
    public struct Migration: Sendable {
        public let version: Int
        public let summary: String
        /// The statements, with `{schema}` for the schema's name.
        let statements: [String]
    }

    /// The tables that hold a tenant's rows (each gets the policy).
    static let tenantTables = ["tenants", "customers", "users", "tickets", "entries", "calls", "notifications", "inboxes", "events"]

    public static let migrations: [Migration] = [
        Migration(version: 1, summary: "tenants, accounts, tickets, entries, calls, inboxes and the event log", statements: [
            """
            CREATE TABLE {schema}.tenants (
                tenant_id text PRIMARY KEY,
                doc jsonb NOT NULL,
                last_customer bigint NOT NULL DEFAULT 0,
                last_user bigint NOT NULL DEFAULT 0,
                last_ticket bigint NOT NULL DEFAULT 0,
                last_call bigint NOT NULL DEFAULT 0,
                last_event bigint NOT NULL DEFAULT 0
            )
            """,
            """
            CREATE TABLE {schema}.customers (
                tenant_id text NOT NULL REFERENCES {schema}.tenants,
                customer_id text NOT NULL,
                email text NOT NULL,
                doc jsonb NOT NULL,
                PRIMARY KEY (tenant_id, customer_id),
                UNIQUE (tenant_id, email)
            )
            """,
            """
            CREATE TABLE {schema}.users (
                tenant_id text NOT NULL REFERENCES {schema}.tenants,
                user_id text NOT NULL,
                email text NOT NULL,
                made bigint GENERATED ALWAYS AS IDENTITY,
                doc jsonb NOT NULL,
                PRIMARY KEY (tenant_id, user_id),
                UNIQUE (tenant_id, email)
            )
            """,
            "CREATE INDEX users_by_email ON {schema}.users (email, made)",
            """
            CREATE TABLE {schema}.tickets (
                tenant_id text NOT NULL REFERENCES {schema}.tenants,
                number bigint NOT NULL,
                customer_id text NOT NULL,
                doc jsonb NOT NULL,
                PRIMARY KEY (tenant_id, number)
            )
            """,
            "CREATE INDEX tickets_by_customer ON {schema}.tickets (tenant_id, customer_id, number)",
            """
            CREATE TABLE {schema}.entries (
                tenant_id text NOT NULL,
                ticket bigint NOT NULL,
                seq bigint NOT NULL,
                note bigint NOT NULL,
                visible boolean NOT NULL,
                doc jsonb NOT NULL,
                PRIMARY KEY (tenant_id, ticket, seq, note),
                FOREIGN KEY (tenant_id, ticket) REFERENCES {schema}.tickets
            )
            """,
            """
            CREATE TABLE {schema}.calls (
                tenant_id text NOT NULL REFERENCES {schema}.tenants,
                number bigint NOT NULL,
                customer_id text NOT NULL,
                doc jsonb NOT NULL,
                PRIMARY KEY (tenant_id, number)
            )
            """,
            "CREATE INDEX calls_by_customer ON {schema}.calls (tenant_id, customer_id, number)",
            """
            CREATE TABLE {schema}.notifications (
                tenant_id text NOT NULL,
                user_id text NOT NULL,
                id bigint NOT NULL,
                doc jsonb NOT NULL,
                PRIMARY KEY (tenant_id, user_id, id)
            )
            """,
            """
            CREATE TABLE {schema}.inboxes (
                tenant_id text NOT NULL REFERENCES {schema}.tenants,
                user_id text NOT NULL,
                last_id bigint NOT NULL DEFAULT 0,
                read_up_to bigint NOT NULL DEFAULT 0,
                read_ids bigint[] NOT NULL DEFAULT '{}',
                PRIMARY KEY (tenant_id, user_id)
            )
            """,
            """
            CREATE TABLE {schema}.events (
                tenant_id text NOT NULL REFERENCES {schema}.tenants,
                seq bigint NOT NULL,
                at timestamptz NOT NULL,
                doc jsonb NOT NULL,
                PRIMARY KEY (tenant_id, seq)
            )
            """,
            "CREATE INDEX events_by_time ON {schema}.events (at)",
        ] + tenantTables.flatMap { policy(on: $0, tenantRows) }),
        nodesMigration,
        followsMigration,
    ]

    /// Migration 2's tables that hold a tenant's rows.
    static let presenceTables = ["presence", "away"]
    /// Migration 2's tables that hold no tenant's rows: the nodes (seen by any transaction that
    /// named a tenant: presence is read per tenant) and failed logins (only by one that named
    /// every tenant, `*`).
    static let nodeTables = ["nodes", "login_failures"]

    static let nodesMigration = Migration(version: 2, summary: "nodes, presence, away messages and failed logins shared by the nodes", statements: [
        """
        CREATE TABLE {schema}.nodes (
            node text PRIMARY KEY,
            started_at timestamptz NOT NULL DEFAULT now(),
            seen_at timestamptz NOT NULL DEFAULT now()
        )
        """,
        """
        CREATE TABLE {schema}.presence (
            tenant_id text NOT NULL REFERENCES {schema}.tenants,
            user_id text NOT NULL,
            node text NOT NULL,
            sessions bigint NOT NULL CHECK (sessions > 0),
            PRIMARY KEY (tenant_id, user_id, node)
        )
        """,
        "CREATE INDEX presence_by_node ON {schema}.presence (node)",
        """
        CREATE TABLE {schema}.away (
            tenant_id text NOT NULL REFERENCES {schema}.tenants,
            user_id text NOT NULL,
            reason text NOT NULL,
            PRIMARY KEY (tenant_id, user_id)
        )
        """,
        """
        CREATE TABLE {schema}.login_failures (
            key text NOT NULL,
            at timestamptz NOT NULL DEFAULT now()
        )
        """,
        "CREATE INDEX login_failures_by_key ON {schema}.login_failures (key, at)",
        "CREATE INDEX login_failures_by_time ON {schema}.login_failures (at)",
    ] + presenceTables.flatMap { policy(on: $0, tenantRows) }
      + policy(on: "nodes", "current_setting('deskline.tenant', true) <> ''")
      + policy(on: "login_failures", "current_setting('deskline.tenant', true) = '*'"))

    static let followsMigration = Migration(version: 3, summary: "the tickets staff follow, per node (IRC channel members across nodes); where an imported tenant's history ends", statements: [
        "ALTER TABLE {schema}.tenants ADD COLUMN history_until bigint NOT NULL DEFAULT 0",
        """
        CREATE TABLE {schema}.follows (
            tenant_id text NOT NULL REFERENCES {schema}.tenants,
            ticket bigint NOT NULL,
            user_id text NOT NULL,
            node text NOT NULL,
            PRIMARY KEY (tenant_id, ticket, user_id, node)
        )
        """,
        "CREATE INDEX follows_by_node ON {schema}.follows (node)",
    ] + policy(on: "follows", tenantRows))

    /// The policy of a table of tenants' rows: the transaction's tenant's rows, or every row for
    /// a transaction that named every tenant (`*`).
    static let tenantRows = "tenant_id = current_setting('deskline.tenant', true) OR current_setting('deskline.tenant', true) = '*'"

    /// Row-level security on `table`, forced for its owner too, with one policy.
    static func policy(on table: String, _ condition: String) -> [String] {
        [
            "ALTER TABLE {schema}.\(table) ENABLE ROW LEVEL SECURITY",
            "ALTER TABLE {schema}.\(table) FORCE ROW LEVEL SECURITY",
            "CREATE POLICY tenant_scope ON {schema}.\(table) USING (\(condition))",
        ]
    }

    /// `schema` as an identifier in SQL: checked (a-z, 0-9, `_`, so nothing to escape) and
    /// quoted (so a reserved word such as `user` works).
    static func quote(_ schema: String) throws(DesklineError) -> String {
        guard PostgresSettings.isPlainIdentifier(schema) else { throw .invalidArgument("'\(schema)' is not a usable schema name") }
        return "\"\(schema)\""
    }

    /// The version this build reads and writes.
    public static var current: Int { migrations.last?.version ?? 0 }

    /// The version of the schema in `schema` (0: no Deskline tables there).
    public static func installedVersion(_ connection: PostgresConnection, schema: String, logger: Logger) async throws -> Int {
        let quoted = try quote(schema)
        let exists = try await connection.query(
            "SELECT to_regclass(\(quoted + ".schema_migrations")) IS NOT NULL", logger: logger
        ).collect().first?.decode(Bool.self) ?? false
        guard exists else { return 0 }
        let rows = try await connection.query(
            "SELECT coalesce(max(version), 0)::bigint FROM \(unescaped: quoted).schema_migrations", logger: logger).collect()
        return try rows.first?.decode(Int.self) ?? 0
    }

    /// Applies the migrations `schema` lacks, each in its own transaction, under an advisory lock
    /// (two `migrate` runs at once take turns). Returns the versions applied.
    public static func migrate(_ connection: PostgresConnection, schema: String, logger: Logger) async throws -> [Int] {
        let quoted = try quote(schema)
        // Waiting for another run's lock is not a slow statement: no statement timeout here.
        try await connection.run("SET statement_timeout = 0", logger: logger)
        try await connection.run("SELECT pg_advisory_lock(hashtext(\(schema + ".deskline_migrate")))", logger: logger)
        do {
            try await connection.run("CREATE SCHEMA IF NOT EXISTS \(unescaped: quoted)", logger: logger)
            try await connection.run("""
                CREATE TABLE IF NOT EXISTS \(unescaped: quoted).schema_migrations (
                    version bigint PRIMARY KEY, summary text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())
                """, logger: logger)
            let installed = try await installedVersion(connection, schema: schema, logger: logger)
            guard installed <= current else {
                throw DesklineError.storage("the schema is at version \(installed), newer than this build's \(current): upgrade deskline")
            }
            var applied: [Int] = []
            for migration in migrations where migration.version > installed {
                try await connection.withTransaction(logger: logger) { connection in
                    for statement in migration.statements {
                        let sql = statement.replacingOccurrences(of: "{schema}", with: quoted)
                        try await connection.run(PostgresQuery(unsafeSQL: sql), logger: logger)
                    }
                    try await connection.run(
                        "INSERT INTO \(unescaped: quoted).schema_migrations (version, summary) VALUES (\(migration.version), \(migration.summary))",
                        logger: logger)
                }
                applied.append(migration.version)
                logger.info("applied a schema migration", metadata: ["version": "\(migration.version)", "summary": "\(migration.summary)"])
            }
            try await connection.run("SELECT pg_advisory_unlock(hashtext(\(schema + ".deskline_migrate")))", logger: logger)
            return applied
        } catch {
            _ = try? await connection.run("SELECT pg_advisory_unlock(hashtext(\(schema + ".deskline_migrate")))", logger: logger)
            throw error
        }
    }
}
