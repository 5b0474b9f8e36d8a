import DesklineCore
import DesklinePostgres
import DesklinePostgresTesting
import Foundation
import Logging
import NIOCore
import NIOPosix
import PostgresNIO
import ServiceLifecycle
import Synchronization
import Testing

/// What only the PostgreSQL backend has to get right (the conformance suite checks the port's
/// behaviour): row-level security, several nodes on one schema, numbers under writers on several
/// nodes, schema versions, the indexes its queries use, and a server that does not answer.
struct PostgresStoreTests {
    // MARK: Row-level security

    @Test func rowLevelSecurityShowsATransactionOnlyTheTenantItNames() async throws {
        let server = try await TestPostgres.server()
        let settings = try await TestPostgres.freshSchema(server)
        let w = try await seeded(PostgresStore(client: server.client, settings: settings, logger: TestPostgres.logger))
        // acme: 3 tickets (3 events), 3 entries (3 events), one of them told amy (an inbox line).
        let acmeTicket = try await w.open("one")
        _ = try await w.open("two")
        _ = try await w.open("three")
        try await w.append(w.draft(.message, "hello"), to: acmeTicket.id)
        try await w.append(w.draft(.note, "internal"), to: acmeTicket.id)
        _ = try await w.store.changeTicket(acmeTicket.id, in: w.acme, w.telling([w.amy], w.draft(.message, "told")))
        // globex: 2 tickets, 1 entry, 1 call request (4 events).
        let gus = CustomerID.numbered(1)
        let globexTicket = try await w.open("g1", customer: gus, in: w.globex)
        _ = try await w.open("g2", customer: gus, in: w.globex)
        try await w.append(w.draft(.message, "hi", by: UserID.numbered(1)), to: globexTicket.id, in: w.globex)
        let time = w.now
        _ = try await w.store.fileCall(in: w.globex) { id in
            let call = CallRequest.filed(id, in: w.globex, by: gus, about: nil, phone: "+1 555 0100", note: nil, at: time)
            return Change(call: call, event: TicketEvent(kind: .call, tenantId: w.globex, call: call,
                                                         actor: Actor(id: .numbered(1), name: "gus", role: .customer), at: time))
        }
        let acme = ["tenants": 1, "customers": 2, "users": 3, "tickets": 3, "entries": 3, "calls": 0, "notifications": 1,
                    "inboxes": 1, "events": 6]
        let globex = ["tenants": 1, "customers": 1, "users": 1, "tickets": 2, "entries": 1, "calls": 1, "notifications": 0,
                      "inboxes": 0, "events": 4]
        let none = acme.mapValues { _ in 0 }
        let schema = settings.schema

        // RLS binds neither a superuser nor a role with BYPASSRLS: the check means nothing for those.
        let (superuser, bypass) = try await server.client.withConnection { connection in
            try await connection.query("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user", logger: logger)
                .collect().first!.decode((Bool, Bool).self)
        }
        try #require(!superuser && !bypass, "the test role bypasses row-level security (superuser \(superuser), bypassrls \(bypass))")

        // Every table but the migration record holds tenant rows, is the role's own and forces the
        // policy on its owner too (a new table without it would show every tenant's rows).
        let tables = try await server.client.withConnection { connection in
            var tables: [String: Bool] = [:]
            for try await (name, enabled, forced, owned, policies) in try await connection.query("""
                SELECT c.relname::text, c.relrowsecurity, c.relforcerowsecurity, pg_get_userbyid(c.relowner) = current_user,
                       (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid)::bigint
                FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = \(schema) AND c.relkind = 'r'
                """, logger: logger).decode((String, Bool, Bool, Bool, Int).self) {
                tables[name] = enabled && forced && owned && policies == 1
            }
            return tables
        }
        // (Migration 2's tables: presence and away rows are a tenant's; nodes and failed logins
        // are seen only by a transaction that named a tenant, or every tenant.)
        #expect(Set(tables.keys) == Set(acme.keys).union(["schema_migrations", "presence", "away", "nodes", "login_failures", "follows"]))
        #expect(tables.filter { !$0.value }.keys.sorted() == ["schema_migrations"])

        #expect(try await counts(server, schema, tenant: nil, inTransaction: false) == none)
        #expect(try await counts(server, schema, tenant: nil) == none)
        #expect(try await counts(server, schema, tenant: "") == none)
        #expect(try await counts(server, schema, tenant: "acme") == acme)
        #expect(try await counts(server, schema, tenant: "globex") == globex)
        #expect(try await counts(server, schema, tenant: "initech") == none)
        #expect(try await counts(server, schema, tenant: "*") == acme.merging(globex, uniquingKeysWith: +))

        // Writes: another tenant's rows cannot be changed, deleted or made.
        let changed = try await inTransaction(server, tenant: "acme") { connection in
            let updated = try await connection.query("""
                WITH changed AS (UPDATE \(unescaped: schema).tickets SET doc = doc WHERE tenant_id = 'globex' RETURNING 1)
                SELECT count(*)::bigint FROM changed
                """, logger: logger).collect().first!.decode(Int.self)
            let deleted = try await connection.query("""
                WITH gone AS (DELETE FROM \(unescaped: schema).events WHERE tenant_id = 'globex' RETURNING 1) SELECT count(*)::bigint FROM gone
                """, logger: logger).collect().first!.decode(Int.self)
            return updated + deleted
        }
        #expect(changed == 0)
        await #expect {
            try await inTransaction(server, tenant: "acme") { connection in
                _ = try await connection.query("""
                    INSERT INTO \(unescaped: schema).tickets (tenant_id, number, customer_id, doc) VALUES ('globex', 9999, 'c1', '{}')
                    """, logger: logger)
            }
        } throws: { error in
            // 42501: new row violates row-level security policy.
            (error as? PSQLError)?.serverInfo?[.sqlState] == "42501"
        }
        #expect(try await counts(server, schema, tenant: "globex") == globex)
        try await drop(server, schema)
    }

    // MARK: Several nodes

    @Test func eventsCommittedOnOneNodeReachAnotherNodesFeedOnceAndInOrder() async throws {
        let server = try await TestPostgres.server()
        let settings = try await TestPostgres.freshSchema(server)
        // Node B polls too rarely to matter here: what it learns, it learns from NOTIFY.
        var settingsB = settings
        settingsB.pollIntervalMilliseconds = 60_000
        let (clientB, runnerB) = ownClient(settingsB, password: server.password, connections: 3)
        defer { runnerB.cancel() }
        let nodeA = PostgresStore(client: server.client, settings: settings, logger: TestPostgres.logger)
        let nodeB = PostgresStore(client: clientB, settings: settingsB, logger: TestPostgres.logger)
        let w = try await seeded(nodeA)

        let seen = Collected()
        let feed = nodeB.committedEvents()
        let reader = Task { for await batch in feed { seen.add(batch) } }
        defer { reader.cancel() }
        let following = Task { await nodeB.run() }

        // B starts from the events committed before it began following (it replays no past):
        // commit globex tickets on A until B hands one on, and B follows.
        let started = await eventually(every: .milliseconds(200)) {
            _ = try? await w.open("probe", customer: .numbered(1), in: w.globex)
            return !seen.events(of: w.globex).isEmpty
        }
        try #require(started, "node B never handed on an event committed on node A")

        // 6 tickets with 4 entries each, written concurrently on A: 30 acme events.
        try await withThrowingDiscardingTaskGroup { group in
            for i in 1...6 {
                group.addTask {
                    let ticket = try await w.open("ticket \(i)")
                    for j in 1...4 {
                        try await w.append(w.draft(j.isMultiple(of: 2) ? .note : .message, "\(i).\(j)"), to: ticket.id)
                    }
                }
            }
        }
        #expect(await eventually { seen.events(of: w.acme).count >= 30 })
        // One more: anything B handed on twice would have come before it.
        try await w.append(w.draft(.message, "last"), to: TicketID(1001))
        #expect(await eventually { seen.events(of: w.acme).contains { $0.seq == 31 } })

        let logged = try await nodeA.events(in: w.acme, after: 0, limit: 100)
        #expect(logged.map { $0.seq ?? 0 } == Array(1...31))
        #expect(seen.events(of: w.acme).map { $0.seq ?? 0 } == Array(1...31))
        #expect(seen.events(of: w.acme) == logged)
        let probes = seen.events(of: w.globex).map { $0.seq ?? 0 }
        #expect(probes == probes.indices.map { probes[0] + $0 })
        #expect(seen.batches.allSatisfy { batch in Set(batch.map(\.tenantId)).count == 1 })

        following.cancel()
        let ended = await outcome(within: .seconds(10)) { await following.value }
        #expect(ended != nil, "PostgresStore.run() did not return within 10 s of its task's cancellation")
        try await drop(server, settings.schema)
    }

    /// A node stopped by its service group (SIGTERM) ends `run()`, so the group can exit.
    @Test
    func gracefulShutdownEndsRun() async throws {
        let server = try await TestPostgres.server()
        let settings = try await TestPostgres.freshSchema(server)
        let store = PostgresStore(client: server.client, settings: settings, logger: TestPostgres.logger)
        // As `deskline serve` runs it: a service beside the gateway.
        let group = ServiceGroup(services: [store], logger: quiet)
        let running = Task { try await group.run() }
        _ = try await seeded(store)
        let channel = "deskline_events_" + settings.schema
        let listening = await eventually {
            let listeners = try? await server.client.withConnection { connection in
                try await connection.query("""
                    SELECT count(*)::bigint FROM pg_stat_activity WHERE query LIKE \("%LISTEN%" + channel + "%")
                    """, logger: logger).collect().first!.decode(Int.self)
            }
            return (listeners ?? 0) > 0
        }
        try #require(listening, "run() never listened on \(channel)")
        await group.triggerGracefulShutdown()
        let ended = await outcome(within: .seconds(10)) { try await running.value }
        if ended == nil { running.cancel() }
        guard case .success = try #require(ended, "the service group did not end within 10 s of a graceful shutdown") else {
            Issue.record("the service group failed: \(String(describing: ended))")
            return
        }
        try await drop(server, settings.schema)
    }

    // MARK: Numbers under writers on two nodes

    @Test func numbersStayGaplessUnderConcurrentWritersOnTwoNodes() async throws {
        let server = try await TestPostgres.server()
        let settings = try await TestPostgres.freshSchema(server)
        let (clientB, runnerB) = ownClient(settings, password: server.password, connections: 4)
        defer { runnerB.cancel() }
        let nodes = [PostgresStore(client: server.client, settings: settings, logger: TestPostgres.logger),
                     PostgresStore(client: clientB, settings: settings, logger: TestPostgres.logger)]
        let w = try await seeded(nodes[0])
        let time = w.now

        let opened = try await withThrowingTaskGroup(of: Ticket.self) { group in
            for i in 0..<100 {
                let node = nodes[i % 2]
                group.addTask { try await node.openTicket(customer: w.annC, subject: "t\(i)", in: w.acme, at: time) }
            }
            return try await group.reduce(into: [Ticket]()) { $0.append($1) }
        }
        #expect(opened.map(\.id.number).sorted() == Array(1001...1100))
        var events = try await nodes[1].events(in: w.acme, after: 0, limit: 1000)
        #expect(events.map { $0.seq ?? 0 } == Array(1...100))
        // One lock numbers both: the event log's order is the order the numbers were handed out.
        #expect(events.map { $0.ticket?.id.number ?? 0 } == Array(1001...1100))
        #expect(try await nodes[0].lastEventSeq(in: w.acme) == 100)
        #expect(try await nodes[1].lastEventSeq(in: w.acme) == 100)
        #expect(try await nodes[0].tickets(in: w.acme).map(\.id.number) == Array(1001...1100))

        // 50 appends to one ticket from both nodes: every third a note.
        let ticket = TicketID(1001)
        let appended = try await withThrowingTaskGroup(of: TicketEntry?.self) { group in
            for i in 0..<50 {
                let node = nodes[i % 2]
                let draft = w.draft(i.isMultiple(of: 3) ? .note : .message, "e\(i)")
                group.addTask { try await node.appendEntry(draft, to: ticket, in: w.acme, at: time)?.1 }
            }
            return try await group.reduce(into: [TicketEntry?]()) { $0.append($1) }
        }
        let entries = appended.compactMap { $0 }
        #expect(entries.count == 50)
        #expect(entries.filter { $0.note == nil }.map(\.seq).sorted() == Array(1...33))
        #expect(entries.compactMap(\.note).sorted() == Array(1...17))
        let stored = try await nodes[1].entries(of: ticket, in: w.acme, after: nil, before: nil, limit: 100, includeNotes: true)
        #expect(stored.count == 50)
        #expect(zip(stored, stored.dropFirst()).allSatisfy { $0.position < $1.position })
        #expect(stored.sorted { $0.position < $1.position } == entries.sorted { $0.position < $1.position })
        let final = try #require(try await nodes[0].ticket(ticket, in: w.acme))
        #expect(final.lastSeq == 33 && final.noteCount == 17)
        events = try await nodes[0].events(in: w.acme, after: 100, limit: 1000)
        #expect(events.map { $0.seq ?? 0 } == Array(101...150))
        #expect(events.compactMap(\.entry).sorted { $0.position < $1.position } == stored)
        #expect(try await nodes[1].lastEventSeq(in: w.acme) == 150)
        try await drop(server, settings.schema)
    }

    // MARK: Schema versions

    @Test func schemaVersionsAreRecordedAndANewerSchemaIsRefused() async throws {
        let server = try await TestPostgres.server()
        let schema = newSchemaName()
        let empty = newSchemaName()
        try await server.client.withConnection { connection in
            #expect(try await Schema.installedVersion(connection, schema: schema, logger: logger) == 0)
            try await connection.query("CREATE SCHEMA \(unescaped: empty)", logger: logger)
            #expect(try await Schema.installedVersion(connection, schema: empty, logger: logger) == 0)

            #expect(try await Schema.migrate(connection, schema: schema, logger: logger) == Schema.migrations.map(\.version))
            #expect(try await Schema.installedVersion(connection, schema: schema, logger: logger) == Schema.current)
            #expect(try await advisoryLocks(connection) == 0)
            #expect(try await Schema.migrate(connection, schema: schema, logger: logger) == [])
            #expect(try await Schema.installedVersion(connection, schema: schema, logger: logger) == Schema.current)

            try await connection.query("""
                INSERT INTO \(unescaped: schema).schema_migrations (version, summary) VALUES (\(Schema.current + 1), 'from a newer build')
                """, logger: logger)
            #expect(try await Schema.installedVersion(connection, schema: schema, logger: logger) == Schema.current + 1)
            await #expect {
                try await Schema.migrate(connection, schema: schema, logger: logger)
            } throws: { error in
                (error as? DesklineError)?.code == "STORAGE_ERROR"
            }
            // The refusal let go of the migration lock.
            #expect(try await advisoryLocks(connection) == 0)
        }
        try await drop(server, schema)
        try await drop(server, empty)
    }

    @Test func concurrentMigrationsTakeTurns() async throws {
        let server = try await TestPostgres.server()
        let schema = newSchemaName()
        let applied = try await withThrowingTaskGroup(of: [Int].self) { group in
            for _ in 0..<2 {
                group.addTask {
                    try await server.client.withConnection { connection in
                        try await Schema.migrate(connection, schema: schema, logger: logger)
                    }
                }
            }
            return try await group.reduce(into: [[Int]]()) { $0.append($1) }
        }
        #expect(applied.sorted { $0.count < $1.count } == [[], Schema.migrations.map(\.version)])
        let store = PostgresStore(client: server.client, settings: server.settings.with(schema: schema), logger: TestPostgres.logger)
        let w = try await seeded(store)
        #expect(try await w.open().id == TicketID(1001))
        try await drop(server, schema)
    }

    /// A migration waits its turn for the migration lock, past the statement timeout (a wait is
    /// not a slow statement), and applies nothing while another run holds it.
    @Test
    func aMigrationWaitsForTheLockAndAppliesNothingMeanwhile() async throws {
        let server = try await TestPostgres.server()
        var settings = server.settings.with(schema: newSchemaName())
        settings.statementTimeoutSeconds = 1
        let (client, runner) = ownClient(settings, password: server.password, connections: 1)
        defer { runner.cancel() }
        let schema = settings.schema
        try await server.client.withConnection { other in
            _ = try await other.query("SELECT pg_advisory_lock(hashtext(\(schema + ".deskline_migrate")))", logger: logger).collect()
            let migration = Task {
                try await client.withConnection { connection in try await Schema.migrate(connection, schema: schema, logger: logger) }
            }
            // Longer than the statement timeout: the migration still waits, and nothing is applied.
            try await Task.sleep(for: .milliseconds(1500))
            #expect(try await Schema.installedVersion(other, schema: schema, logger: logger) == 0)
            _ = try await other.query("SELECT pg_advisory_unlock(hashtext(\(schema + ".deskline_migrate")))", logger: logger).collect()
            let migrated = await outcome(within: .seconds(15)) { try await migration.value }
            switch migrated {
            case nil: Issue.record("the migration did not go on once the lock was free")
            case .success(let applied): #expect(applied == Schema.migrations.map(\.version))
            case .failure(let error): Issue.record("the migration failed: \(error)")
            }
            #expect(try await Schema.installedVersion(other, schema: schema, logger: logger) == Schema.current)
        }
        try await drop(server, schema)
    }

    /// A write acknowledged is stored, also in a schema with the longest name the settings accept
    /// (`NOTIFY`, the nodes' doorbell, takes channel names of at most 63 bytes).
    @Test
    func aWriteIsStoredInASchemaWithTheLongestValidName() async throws {
        let server = try await TestPostgres.server()
        let schema = newSchemaName() + "_" + String(repeating: "x", count: 28)
        let settings = server.settings.with(schema: schema)
        try settings.validate()
        #expect(schema.utf8.count == 63)
        _ = try await server.client.withConnection { connection in
            try await Schema.migrate(connection, schema: schema, logger: logger)
        }
        let w = try await seeded(PostgresStore(client: server.client, settings: settings, logger: quiet))
        let opened = try await w.open()
        #expect(try await w.store.ticket(opened.id, in: w.acme) == opened)
        #expect(try await w.store.lastEventSeq(in: w.acme) == 1)
        try await drop(server, schema)
    }

    // MARK: Indexes

    @Test func theStoresQueriesUseIndexesOnBigTables() async throws {
        let server = try await TestPostgres.server()
        let settings = try await TestPostgres.freshSchema(server)
        let s = settings.schema + "."
        // 50 tenants; each with 200 tickets of 25 customers, 8 entries and 2 notes a ticket, 200
        // users, 20 of them with 20 notifications, and 400 events; tn7 also has a ticket of 3000
        // entries and 5000 events.
        try await server.client.withConnection { connection in
            try await connection.query("BEGIN", logger: logger)
            try await connection.query("SELECT set_config('deskline.tenant', '*', true)", logger: logger)
            for statement in [
                "INSERT INTO \(s)tenants (tenant_id, doc) SELECT 'tn' || t, '{}' FROM generate_series(1, 50) t",
                """
                INSERT INTO \(s)tickets (tenant_id, number, customer_id, doc)
                SELECT 'tn' || t, 1000 + n, 'c' || (n % 25 + 1), '{"subject": "printer"}' FROM generate_series(1, 50) t, generate_series(1, 200) n
                """,
                """
                INSERT INTO \(s)entries (tenant_id, ticket, seq, note, visible, doc)
                SELECT 'tn' || t, 1000 + n, e, 0, true, '{"text": "hello"}'::jsonb
                FROM generate_series(1, 50) t, generate_series(1, 200) n, generate_series(1, 8) e
                UNION ALL
                SELECT 'tn' || t, 1000 + n, e, 1, false, '{"text": "note"}'::jsonb
                FROM generate_series(1, 50) t, generate_series(1, 200) n, generate_series(2, 8, 4) e
                """,
                """
                INSERT INTO \(s)entries (tenant_id, ticket, seq, note, visible, doc)
                SELECT 'tn7', 1050, e, 0, true, '{"text": "long"}' FROM generate_series(9, 3000) e
                """,
                """
                INSERT INTO \(s)users (tenant_id, user_id, email, doc)
                SELECT 'tn' || t, 'u' || u, 'user' || u || '@tn' || t || '.test', '{}' FROM generate_series(1, 50) t, generate_series(1, 200) u
                """,
                """
                INSERT INTO \(s)notifications (tenant_id, user_id, id, doc)
                SELECT 'tn' || t, 'u' || u, i, '{}' FROM generate_series(1, 50) t, generate_series(1, 20) u, generate_series(1, 20) i
                """,
                """
                INSERT INTO \(s)events (tenant_id, seq, at, doc)
                SELECT 'tn' || t, e, now() - e * interval '1 minute', '{}' FROM generate_series(1, 50) t, generate_series(1, 400) e
                """,
                """
                INSERT INTO \(s)events (tenant_id, seq, at, doc)
                SELECT 'tn7', e, now() - e * interval '1 second', '{}' FROM generate_series(401, 5000) e
                """,
            ] {
                do {
                    try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                } catch {
                    _ = try? await connection.query("ROLLBACK", logger: logger)
                    throw error
                }
            }
            try await connection.query("COMMIT", logger: logger)
            try await connection.query(PostgresQuery(unsafeSQL: "ANALYZE \(s)tenants, \(s)tickets, \(s)entries, \(s)users, \(s)notifications, \(s)events"),
                                       logger: logger)
        }

        // The store's queries, as PostgresStore+Tickets.swift and +Events.swift send them.
        let tenant = "tn7", ticket = 1050, customer = "c3", user = "u4", limit = 50
        let low = EntryPosition(-1), high = EntryPosition(Int(Int32.max)), after = EntryPosition(3)
        let queries: [(name: String, tenant: String, query: PostgresQuery, index: String?)] = [
            ("history page, newest first", tenant, """
                EXPLAIN (FORMAT JSON) SELECT doc::text FROM \(unescaped: s)entries
                WHERE tenant_id = \(tenant) AND ticket = \(ticket)
                  AND (seq, note) > (\(low.seq), \(low.note)) AND (seq, note) < (\(high.seq), \(high.note))
                  AND (visible OR \(false))
                ORDER BY seq DESC, note DESC LIMIT \(limit)
                """, "entries_pkey"),
            ("history page after a position", tenant, """
                EXPLAIN (FORMAT JSON) SELECT doc::text FROM \(unescaped: s)entries
                WHERE tenant_id = \(tenant) AND ticket = \(ticket)
                  AND (seq, note) > (\(after.seq), \(after.note)) AND (seq, note) < (\(high.seq), \(high.note))
                  AND (visible OR \(true))
                ORDER BY seq, note LIMIT \(limit)
                """, "entries_pkey"),
            ("a customer's tickets", tenant, """
                EXPLAIN (FORMAT JSON) SELECT doc::text FROM \(unescaped: s)tickets WHERE tenant_id = \(tenant) AND customer_id = \(customer)
                ORDER BY number
                """, "tickets_by_customer"),
            ("a customer's ticket numbers", tenant, """
                EXPLAIN (FORMAT JSON) SELECT number FROM \(unescaped: s)tickets WHERE tenant_id = \(tenant) AND customer_id = \(customer)
                ORDER BY number
                """, "tickets_by_customer"),
            ("a ticket", tenant, """
                EXPLAIN (FORMAT JSON) SELECT doc::text FROM \(unescaped: s)tickets WHERE tenant_id = \(tenant) AND number = \(ticket)
                """, "tickets_pkey"),
            ("the queue", tenant, """
                EXPLAIN (FORMAT JSON) SELECT doc::text FROM \(unescaped: s)tickets WHERE tenant_id = \(tenant) ORDER BY number
                """, nil),
            ("an inbox", tenant, """
                EXPLAIN (FORMAT JSON) SELECT id, doc::text FROM \(unescaped: s)notifications
                WHERE tenant_id = \(tenant) AND user_id = \(user) ORDER BY id
                """, "notifications_pkey"),
            ("events after a seq", tenant, """
                EXPLAIN (FORMAT JSON) SELECT doc::text FROM \(unescaped: s)events WHERE tenant_id = \(tenant) AND seq > \(390)
                ORDER BY seq LIMIT \(EventFollower.catchUpPage)
                """, "events_pkey"),
            ("accounts with an email (every tenant)", "*", """
                EXPLAIN (FORMAT JSON) SELECT tenant_id, user_id FROM \(unescaped: s)users WHERE email = \("user4@tn7.test") ORDER BY made
                """, "users_by_email"),
            ("pruning old events (a tenant)", tenant,
             { let q = PostgresStore.pruneQuery(s, tenant, last: 400, cutoff: Date().addingTimeInterval(-7 * 86_400))
               return PostgresQuery(unsafeSQL: "EXPLAIN (FORMAT JSON) " + q.sql, binds: q.binds) }(),
             "events_pkey"),
        ]
        for (name, tenant, query, index) in queries {
            let plan = try await inTransaction(server, tenant: tenant) { connection in
                try await connection.query(query, logger: logger).collect().first!.decode(String.self)
            }
            let nodes = try planNodes(plan)
            let described = nodes.map { [$0.type, $0.relation, $0.index].compactMap { $0 }.joined(separator: " ") }
            #expect(!nodes.contains { $0.type == "Seq Scan" }, "\(name) scans a table: \(described)")
            #expect(nodes.contains { $0.index != nil }, "\(name) uses no index: \(described)")
            if let index { #expect(nodes.contains { $0.index == index }, "\(name) does not use \(index): \(described)") }
        }
        try await drop(server, settings.schema)
    }

    // MARK: A server that does not answer

    enum DeadServer: String, CaseIterable, CustomTestStringConvertible {
        /// A port nobody listens on (connecting is refused).
        case nothingListens
        /// A port that accepts connections and never says a word.
        case silentServer

        var testDescription: String { rawValue }
    }

    @Test(arguments: DeadServer.allCases)
    func storeCallsFailWithStorageErrorWhenTheServerDoesNotAnswer(_ dead: DeadServer) async throws {
        let server = try await TestPostgres.server()
        let listener = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in channel.eventLoop.makeSucceededVoidFuture() }
            .bind(host: "127.0.0.1", port: 0).get()
        let port = try #require(listener.localAddress?.port)
        if dead == .nothingListens { try await listener.close() }
        var settings = server.settings
        settings.port = port
        settings.connectTimeoutSeconds = 1
        settings.requestTimeoutSeconds = 1
        let (client, runner) = ownClient(settings, password: server.password, connections: 2)
        defer { runner.cancel() }
        let store = PostgresStore(client: client, settings: settings, logger: quiet)
        let acme = TenantID(rawValue: "acme")!
        let calls: [(String, @Sendable () async throws -> Void)] = [
            ("tenants()", { _ = try await store.tenants() }),
            ("createTenant(_:)", { try await store.createTenant(Tenant(id: acme, name: "Acme", createdAt: Date())) }),
            ("openTicket(customer:subject:in:at:)", {
                _ = try await store.openTicket(customer: .numbered(1), subject: "Printer", in: acme, at: Date())
            }),
        ]
        for (name, call) in calls {
            guard let result = await outcome(within: .seconds(15), call) else {
                Issue.record("\(name) did not return within 15 s with requestTimeoutSeconds 1")
                continue
            }
            switch result {
            case .success: Issue.record("\(name) succeeded without a server")
            case .failure(let error): #expect((error as? DesklineError)?.code == "STORAGE_ERROR", "\(name) threw \(error)")
            }
        }
        if dead == .silentServer { try await listener.close() }
    }

    /// A write that answered `STORAGE_ERROR` ("nothing was changed") because the database took
    /// longer than `requestTimeoutSeconds` is not stored later behind the caller's back.
    @Test
    func aWriteThatTimedOutIsNotStored() async throws {
        let server = try await TestPostgres.server()
        var settings = try await TestPostgres.freshSchema(server)
        settings.requestTimeoutSeconds = 1
        // Long enough that the server never ends the write itself while this test runs.
        settings.statementTimeoutSeconds = 120
        let (client, runner) = ownClient(settings, password: server.password, connections: 2)
        defer { runner.cancel() }
        let store = PostgresStore(client: client, settings: settings, logger: quiet)
        // Everything but the write that is to time out goes through a store with the usual
        // timeout: on a loaded machine (CI) even the seeding can take more than 1 s.
        var patientSettings = settings
        patientSettings.requestTimeoutSeconds = PostgresSettings().requestTimeoutSeconds
        let patient = PostgresStore(client: server.client, settings: patientSettings, logger: quiet)
        let w = try await seeded(patient)
        let time = w.now
        let stored = try await server.client.withConnection { other in
            // Another node holds acme's row (its counters), so the write waits past its timeout.
            try await other.query("BEGIN", logger: logger)
            try await other.query("SELECT set_config('deskline.tenant', 'acme', true)", logger: logger)
            try await other.query("SELECT 1 FROM \(unescaped: settings.schema).tenants WHERE tenant_id = 'acme' FOR UPDATE", logger: logger)
            await #expect {
                try await store.openTicket(customer: w.annC, subject: "timed out", in: w.acme, at: time)
            } throws: { error in
                (error as? DesklineError)?.code == "STORAGE_ERROR"
            }
            try await other.query("ROLLBACK", logger: logger)
            // This one waits for whatever the timed-out write left holding the row.
            return try await patient.openTicket(customer: w.annC, subject: "stored", in: w.acme, at: time)
        }
        #expect(stored.id == TicketID(1001))
        #expect(try await patient.tickets(in: w.acme).map(\.subject) == ["stored"])
        #expect(try await patient.lastEventSeq(in: w.acme) == 1)
        try await drop(server, settings.schema)
    }
}

// MARK: Helpers

private let logger = TestPostgres.logger

/// For stores whose failures are the point (they log each at error level).
private let quiet: Logger = {
    var logger = Logger(label: "test-postgres-quiet")
    logger.logLevel = .critical
    return logger
}()

/// `store` with the conformance suite's two tenants (``StoreKind/seeded()``).
private func seeded(_ store: PostgresStore) async throws -> World {
    try await World.seed(store)
}

private func newSchemaName() -> String {
    "t_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "")
}

private func drop(_ server: TestPostgres.Server, _ schema: String) async throws {
    try await server.client.withConnection { connection in
        _ = try await connection.query("DROP SCHEMA IF EXISTS \(unescaped: schema) CASCADE", logger: logger)
    }
}

extension PostgresSettings {
    fileprivate func with(schema: String) -> PostgresSettings {
        var settings = self
        settings.schema = schema
        return settings
    }
}

/// A client of its own (another node's), running until its task is cancelled.
private func ownClient(_ settings: PostgresSettings, password: String, connections: Int) -> (PostgresClient, Task<Void, Never>) {
    let client = PostgresClient(configuration: settings.clientConfiguration(password: password, connections: connections))
    let runner = Task.detached { await client.run() }
    return (client, runner)
}

/// Runs `body` in a transaction on one of the server's connections, with `deskline.tenant` set
/// to `tenant` (nil: not set), and rolls it back.
private func inTransaction<T: Sendable>(_ server: TestPostgres.Server, tenant: String?,
                                        _ body: (PostgresConnection) async throws -> T) async throws -> T {
    try await server.client.withConnection { connection in
        try await connection.query("BEGIN", logger: logger)
        do {
            if let tenant { try await connection.query("SELECT set_config('deskline.tenant', \(tenant), true)", logger: logger) }
            let value = try await body(connection)
            try await connection.query("ROLLBACK", logger: logger)
            return value
        } catch {
            _ = try? await connection.query("ROLLBACK", logger: logger)
            throw error
        }
    }
}

/// How many rows of each tenant table a query sees, in a transaction naming `tenant` (or, with
/// `inTransaction` false, in single statements naming none).
private func counts(_ server: TestPostgres.Server, _ schema: String, tenant: String?,
                    inTransaction transaction: Bool = true) async throws -> [String: Int] {
    let tables = ["tenants", "customers", "users", "tickets", "entries", "calls", "notifications", "inboxes", "events"]
    let count: (PostgresConnection) async throws -> [String: Int] = { connection in
        var counts: [String: Int] = [:]
        for table in tables {
            counts[table] = try await connection.query("SELECT count(*)::bigint FROM \(unescaped: schema).\(unescaped: table)", logger: logger)
                .collect().first!.decode(Int.self)
        }
        return counts
    }
    if transaction { return try await inTransaction(server, tenant: tenant, count) }
    return try await server.client.withConnection(count)
}

/// The advisory locks the connection's session holds.
private func advisoryLocks(_ connection: PostgresConnection) async throws -> Int {
    try await connection.query("SELECT count(*)::bigint FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()",
                               logger: logger).collect().first!.decode(Int.self)
}

/// The nodes of an `EXPLAIN (FORMAT JSON)` plan.
private func planNodes(_ json: String) throws -> [(type: String, relation: String?, index: String?)] {
    let explained = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [[String: Any]])
    var nodes: [(type: String, relation: String?, index: String?)] = []
    func walk(_ plan: [String: Any]) {
        nodes.append((plan["Node Type"] as? String ?? "?", plan["Relation Name"] as? String, plan["Index Name"] as? String))
        for child in plan["Plans"] as? [[String: Any]] ?? [] { walk(child) }
    }
    for statement in explained { if let plan = statement["Plan"] as? [String: Any] { walk(plan) } }
    return nodes
}

/// Whether `condition` holds within `limit`, checking every `interval`.
private func eventually(within limit: Duration = .seconds(10), every interval: Duration = .milliseconds(20),
                        _ condition: () async -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + limit
    while ContinuousClock.now < deadline {
        if await condition() { return true }
        try? await Task.sleep(for: interval)
    }
    return await condition()
}

/// `body`'s outcome, or nil if it did not end within `limit` (then it is cancelled and left to
/// end when it will: a test must not hang on what it checks).
private func outcome<T: Sendable>(within limit: Duration, _ body: @escaping @Sendable () async throws -> T) async -> Result<T, any Error>? {
    await withCheckedContinuation { (continuation: CheckedContinuation<Result<T, any Error>?, Never>) in
        let once = Once(continuation)
        let work = Task {
            let result: Result<T, any Error>
            do { result = .success(try await body()) } catch { result = .failure(error) }
            once.resume(result)
        }
        once.timer = Task {
            try? await Task.sleep(for: limit)
            work.cancel()
            once.resume(nil)
        }
    }
}

/// Resumes a continuation with the first of its answers and stops the timer.
private final class Once<T: Sendable>: Sendable {
    private let state: Mutex<(continuation: CheckedContinuation<T?, Never>?, timer: Task<Void, Never>?)>

    init(_ continuation: CheckedContinuation<T?, Never>) {
        state = Mutex((continuation, nil))
    }

    var timer: Task<Void, Never>? {
        get { state.withLock { $0.timer } }
        set {
            let ended = state.withLock { state in
                state.timer = newValue
                return state.continuation == nil
            }
            if ended { newValue?.cancel() }
        }
    }

    func resume(_ value: T?) {
        let (continuation, timer) = state.withLock { state in
            defer { state.continuation = nil }
            return (state.continuation, state.timer)
        }
        guard let continuation else { return }
        timer?.cancel()
        continuation.resume(returning: value)
    }
}

/// The batches a feed handed on.
private final class Collected: Sendable {
    private let received = Mutex<[[TicketEvent]]>([])

    func add(_ batch: [TicketEvent]) { received.withLock { $0.append(batch) } }
    var batches: [[TicketEvent]] { received.withLock { $0 } }
    func events(of tenant: TenantID) -> [TicketEvent] { batches.joined().filter { $0.tenantId == tenant } }
}
