import DesklineCore
import Foundation
import Logging
import PostgresNIO

// `deskline export` and `deskline import` on PostgreSQL: the reads the generic export needs
// beyond the port's usual ones, and a whole tenant loaded in one transaction.

extension PostgresStore {
    public func customers(in tenant: TenantID) async throws(DesklineError) -> [Customer] {
        try await docs(Customer.self, in: tenant.rawValue, """
            SELECT doc::text FROM \(unescaped: s)customers WHERE tenant_id = \(tenant.rawValue)
            """).sorted { ($0.id.number ?? 0) < ($1.id.number ?? 0) }
    }

    public func accountNumbers(in tenant: TenantID) async throws(DesklineError) -> AccountNumbers {
        let s = self.s, logger = self.logger
        return try await transaction(tenant.rawValue, readOnly: true) { connection in
            let rows = try await connection.query(
                "SELECT last_customer, last_user FROM \(unescaped: s)tenants WHERE tenant_id = \(tenant.rawValue)", logger: logger).collect()
            guard let row = rows.first else { throw DesklineError.notFound("no tenant \(tenant)") }
            let (customer, user) = try row.decode((Int, Int).self)
            return AccountNumbers(lastCustomer: customer, lastUser: user)
        }
    }

    /// Rows go in batches of this many per statement (arrays unnested server-side).
    static let importBatch = 1000
    /// How long an import may take in all (it is one transaction; each statement still has the
    /// statement timeout).
    static let importTimeout = Duration.seconds(3600)

    static func chunks<T>(_ rows: [T]) -> [ArraySlice<T>] {
        stride(from: 0, to: rows.count, by: importBatch).map { rows[$0..<min($0 + importBatch, rows.count)] }
    }

    public func importTenant(_ dump: TenantDump, replacing: Bool) async throws(DesklineError) {
        try dump.validate()
        let tenant = dump.tenant.id
        let t = tenant.rawValue
        var stored = dump.tenant
        stored.createdAt = Timestamp.truncate(stored.createdAt)
        let tenantDoc = try Self.encodeOrFail(stored)
        // Everything encoded before the transaction begins.
        typealias Rows = (customers: [(String, String, String)], users: [(String, String, String)], tickets: [(Int, String, String)],
                          entries: [(Int, Int, Int, Bool, String)], calls: [(Int, String, String)],
                          notifications: [(String, Int, String)], events: [(Int, Date, String)])
        let rows: Rows
        do {
            rows = (try dump.customers.map { ($0.id.rawValue, $0.email, try Self.json($0)) },
                    try dump.users.map { ($0.id.rawValue, $0.email, try Self.json($0)) },
                    try dump.tickets.map { ($0.ticket.id.number, $0.ticket.customerId.rawValue, try Self.json($0.ticket)) },
                    try dump.tickets.flatMap { l in try l.entries.map { (l.ticket.id.number, $0.seq, $0.note ?? 0, $0.isVisibleToCustomer, try Self.json($0)) } },
                    try dump.calls.map { ($0.id.number, $0.customerId.rawValue, try Self.json($0)) },
                    try dump.inboxes.flatMap { l in try l.inbox.items.map { (l.user.rawValue, $0.id, try Self.json($0)) } },
                    try dump.events.map { ($0.seq ?? 0, $0.at, try Self.json($0)) })
        } catch {
            throw .storage("could not encode the dump of \(tenant): \(error)")
        }
        let (customers, users, tickets, entries, calls, notifications, events) = rows
        let inboxes = dump.inboxes.map { ($0.user.rawValue, $0.inbox.lastId, $0.inbox.readUpTo, $0.inbox.readIds.sorted()) }
        let counters = Counters(customer: dump.numbers.lastCustomer, user: dump.numbers.lastUser,
                                ticket: dump.lastTicket ?? 0, call: dump.lastCall ?? 0, event: dump.lastEvent)
        let s = self.s, logger = self.logger
        try await transaction(t, until: .now + Self.importTimeout) { connection in
            if try await Self.lockTenant(tenant, connection, s, logger) != nil {
                guard replacing else { throw DesklineError.conflict("tenant \(tenant) already exists (import --replace replaces it)") }
                for table in ["events", "notifications", "inboxes", "entries", "calls", "tickets", "presence", "away", "users", "customers", "tenants"] {
                    try await connection.run("DELETE FROM \(unescaped: s + table) WHERE tenant_id = \(t)", logger: logger)
                }
            }
            // `history_until`: the nodes never push the imported events as if they happened now.
            try await connection.run("""
                INSERT INTO \(unescaped: s)tenants (tenant_id, doc, history_until) VALUES (\(t), \(tenantDoc)::jsonb, \(counters.event))
                """, logger: logger)
            try await counters.save(tenant, connection, s, logger)
            for rows in Self.chunks(customers) {
                try await connection.run("""
                    INSERT INTO \(unescaped: s)customers (tenant_id, customer_id, email, doc)
                    SELECT \(t), id, email, doc::jsonb FROM unnest(\(rows.map(\.0))::text[], \(rows.map(\.1))::text[], \(rows.map(\.2))::text[]) AS r(id, email, doc)
                    """, logger: logger)
            }
            // One at a time, in order: `made` orders one email's logins across tenants.
            for rows in Self.chunks(users) {
                try await connection.run("""
                    INSERT INTO \(unescaped: s)users (tenant_id, user_id, email, doc)
                    SELECT \(t), id, email, doc::jsonb FROM unnest(\(rows.map(\.0))::text[], \(rows.map(\.1))::text[], \(rows.map(\.2))::text[])
                        WITH ORDINALITY AS r(id, email, doc, n) ORDER BY n
                    """, logger: logger)
            }
            for rows in Self.chunks(tickets) {
                try await connection.run("""
                    INSERT INTO \(unescaped: s)tickets (tenant_id, number, customer_id, doc)
                    SELECT \(t), n, c, doc::jsonb FROM unnest(\(rows.map(\.0))::bigint[], \(rows.map(\.1))::text[], \(rows.map(\.2))::text[]) AS r(n, c, doc)
                    """, logger: logger)
            }
            for rows in Self.chunks(entries) {
                try await connection.run("""
                    INSERT INTO \(unescaped: s)entries (tenant_id, ticket, seq, note, visible, doc)
                    SELECT \(t), ticket, seq, note, visible, doc::jsonb
                    FROM unnest(\(rows.map(\.0))::bigint[], \(rows.map(\.1))::bigint[], \(rows.map(\.2))::bigint[],
                                \(rows.map(\.3))::boolean[], \(rows.map(\.4))::text[]) AS r(ticket, seq, note, visible, doc)
                    """, logger: logger)
            }
            for rows in Self.chunks(calls) {
                try await connection.run("""
                    INSERT INTO \(unescaped: s)calls (tenant_id, number, customer_id, doc)
                    SELECT \(t), n, c, doc::jsonb FROM unnest(\(rows.map(\.0))::bigint[], \(rows.map(\.1))::text[], \(rows.map(\.2))::text[]) AS r(n, c, doc)
                    """, logger: logger)
            }
            for (user, lastId, readUpTo, readIds) in inboxes {
                try await connection.run("""
                    INSERT INTO \(unescaped: s)inboxes (tenant_id, user_id, last_id, read_up_to, read_ids)
                    VALUES (\(t), \(user), \(lastId), \(readUpTo), \(readIds)::bigint[])
                    """, logger: logger)
            }
            for rows in Self.chunks(notifications) {
                try await connection.run("""
                    INSERT INTO \(unescaped: s)notifications (tenant_id, user_id, id, doc)
                    SELECT \(t), u, id, doc::jsonb FROM unnest(\(rows.map(\.0))::text[], \(rows.map(\.1))::bigint[], \(rows.map(\.2))::text[]) AS r(u, id, doc)
                    """, logger: logger)
            }
            for rows in Self.chunks(events) {
                try await connection.run("""
                    INSERT INTO \(unescaped: s)events (tenant_id, seq, at, doc)
                    SELECT \(t), seq, at, doc::jsonb FROM unnest(\(rows.map(\.0))::bigint[], \(rows.map(\.1))::timestamptz[], \(rows.map(\.2))::text[]) AS r(seq, at, doc)
                    """, logger: logger)
            }
        }
        usersChanged(tenant)
        // The other nodes read their log's heads again at their next poll; the imported events
        // are history, not pushes: this node does not publish them either.
        published.withLock { $0[tenant] = max($0[tenant] ?? 0, dump.lastEvent) }
    }
}
