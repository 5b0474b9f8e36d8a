import DesklineCore
import Foundation
import Logging
import NIOCore
import PostgresNIO
import ServiceLifecycle
import Synchronization

/// The ``Store`` port on PostgreSQL (docs/STORAGE.md, "PostgreSQL"): rows are the truth, every
/// change is one transaction committed with `synchronous_commit` on before it returns, and several
/// nodes may share one database.
///
/// - Every statement runs in a transaction that names its tenant (`deskline.tenant`); row-level
///   security hides every other tenant's rows from it.
/// - A tenant's writes take its `tenants` row `FOR UPDATE` first: that row holds the tenant's
///   counters (ticket, call, customer, user and event numbers), so numbers stay gapless under
///   writers on several nodes, and the event log's order is the commit order.
/// - On one node a tenant's ticket and call writes go through one queue (``WriteQueues``): they
///   are stored in the order they were submitted, and writes that wait are committed together in
///   one transaction (one fsync for a burst, as the file store's group commit).
/// - Committed events are published to this node's followers at once; ``run()`` brings the
///   other nodes' events (`LISTEN/NOTIFY` as a doorbell, the event log as the truth).
public final class PostgresStore: Store, Service {
    let client: PostgresClient
    let settings: PostgresSettings
    let logger: Logger
    /// `schema.` for table names.
    let s: String
    let feed = EventBroadcast()
    /// Per tenant, the last event seq handed to ``feed`` (so each tenant's go out in order).
    let published = Mutex<[TenantID: Int]>([:])
    let queues = WriteQueues()
    let userCache = Mutex(UserCache())
    /// This node's name in `nodes` and `presence` (new for every start).
    let node = SessionID.newNode()
    /// This node's sessions per user and their writing (PostgresStore+Nodes.swift).
    let nodeState = Mutex(NodeState())
    /// Rung when there is presence to write.
    let presenceWakes: AsyncStream<Void>
    let presenceWake: AsyncStream<Void>.Continuation

    struct UserCache {
        var entries: [TenantID: CachedUsers] = [:]
        /// Counts local user changes: a list read while one happened is not kept.
        var generation = 0
    }

    struct CachedUsers {
        var users: [User]
        var staff: Staff
        var at: ContinuousClock.Instant
    }

    /// How long a tenant's user list is kept before it is read again (a user another node
    /// created shows up within this).
    static let userCacheLifetime = Duration.seconds(1)
    /// The `NOTIFY` channel a schema's nodes ring each other on. (PostgreSQL takes at most 63
    /// bytes; schemas alike in their first 47 characters share one, which only makes their nodes
    /// read their logs once more.)
    var channel: String { String("deskline_events_\(settings.schema)".prefix(63)) }

    /// A store on `client` (which the caller runs), in `settings.schema`, which must hold the
    /// current schema (``Schema/migrate(_:schema:logger:)``).
    public init(client: PostgresClient, settings: PostgresSettings, logger: Logger) {
        self.client = client
        self.settings = settings
        self.logger = logger
        precondition(PostgresSettings.isPlainIdentifier(settings.schema), "unchecked schema name \(settings.schema)")
        // Quoted: a schema may be called like a reserved word (`user`).
        self.s = "\"\(settings.schema)\"."
        (presenceWakes, presenceWake) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    // MARK: Transactions

    /// Runs `body` in a transaction scoped to `tenant` (`*`: every tenant), bounded by
    /// `requestTimeoutSeconds`. PostgreSQL's errors come out as `storage`; a ``DesklineError``
    /// thrown by `body` comes out as it is (after the rollback).
    func transaction<T: Sendable>(_ tenant: String, readOnly: Bool = false, until deadline: ContinuousClock.Instant? = nil,
                                  _ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws(DesklineError) -> T {
        let logger = self.logger
        return try await bounded(until: deadline) { [client] in
            try await client.withConnection { connection in
                // A read sees one snapshot across its statements (an inbox's marks and its lines).
                try await connection.run(readOnly ? "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY" : "BEGIN", logger: logger)
                do {
                    try await connection.run("SELECT set_config('deskline.tenant', \(tenant), true)", logger: logger)
                    let value = try await body(connection)
                    // The caller stopped waiting (requestTimeoutSeconds) and was told nothing was
                    // stored: roll back rather than commit behind its back. (A timeout while the
                    // COMMIT is on its way leaves the outcome open, as any lost connection does.)
                    try Task.checkCancellation()
                    try await connection.run("COMMIT", logger: logger)
                    return value
                } catch {
                    _ = try? await connection.run("ROLLBACK", logger: logger)
                    throw error
                }
            }
        }
    }

    /// Runs `body`, giving up after `requestTimeoutSeconds` or at `deadline` (its task is
    /// cancelled: a wait for a connection ends; a statement under way ends by `statement_timeout`
    /// or the connection, and the transaction rolls back).
    func bounded<T: Sendable>(until deadline: ContinuousClock.Instant? = nil,
                              _ body: @escaping @Sendable () async throws -> T) async throws(DesklineError) -> T {
        let timeout = deadline.map { $0 - .now } ?? .seconds(settings.requestTimeoutSeconds)
        let result: Result<T, any Error> = await withCheckedContinuation { continuation in
            let outcome = Outcome(continuation)
            let work = Task {
                let result: Result<T, any Error>
                do { result = .success(try await body()) } catch { result = .failure(error) }
                outcome.resume(result)
            }
            outcome.timer(Task {
                try? await Task.sleep(for: timeout)
                // Cancelled first, so the work does not pass its last check before COMMIT after the
                // caller was told it timed out.
                work.cancel()
                outcome.resume(.failure(TimedOut()))
            })
        }
        switch result {
        case .success(let value): return value
        case .failure(let error): throw storageError(error)
        }
    }

    struct TimedOut: Error {}

    /// Resumes a continuation once: with whichever of the work and the timer ends first.
    final class Outcome<T: Sendable>: Sendable {
        private struct State {
            var continuation: CheckedContinuation<Result<T, any Error>, Never>?
            var timer: Task<Void, Never>?
        }

        private let state: Mutex<State>

        init(_ continuation: CheckedContinuation<Result<T, any Error>, Never>) {
            state = Mutex(State(continuation: continuation))
        }

        /// Keeps the timer, to stop it when the work ends first.
        func timer(_ timer: Task<Void, Never>) {
            let ended = state.withLock { state in
                state.timer = timer
                return state.continuation == nil
            }
            if ended { timer.cancel() }
        }

        /// True if this call resumed it (and stopped the timer).
        @discardableResult
        func resume(_ result: Result<T, any Error>) -> Bool {
            let (continuation, timer) = state.withLock { state in
                defer { state.continuation = nil }
                return (state.continuation, state.timer)
            }
            guard let continuation else { return false }
            timer?.cancel()
            continuation.resume(returning: result)
            return true
        }
    }

    /// What a failed call tells its caller.
    func storageError(_ error: any Error) -> DesklineError {
        if let error = error as? DesklineError { return error }
        if error is TimedOut {
            logger.error("PostgreSQL did not answer in time", metadata: ["server": "\(settings.serverDescription)",
                                                                         "timeoutSeconds": "\(settings.requestTimeoutSeconds)"])
            return .storage("the database did not answer within \(settings.requestTimeoutSeconds) s")
        }
        if let error = error as? PostgresTransactionError {
            return storageError(error.closureError ?? error.commitError ?? error.beginError ?? error.rollbackError ?? error)
        }
        let detail: String
        if let error = error as? PSQLError {
            detail = PostgresSettings.reason(error)
        } else {
            detail = "\(error)"
        }
        logger.error("a PostgreSQL call failed", metadata: ["server": "\(settings.serverDescription)", "error": "\(String(reflecting: error))"])
        return .storage("the database failed: \(detail)")
    }

    // MARK: Rows

    static let encoder = JSONEncoder.desklineRecords()
    static let decoder = JSONDecoder.desklineRecords()

    static func json<T: Encodable>(_ value: T) throws -> String {
        String(decoding: try encoder.encode(value), as: UTF8.self)
    }

    static func decode<T: Decodable>(_ type: T.Type, _ text: String) throws -> T {
        try decoder.decode(type, from: Data(text.utf8))
    }

    /// The documents (`doc::text`, first column) of `query`'s rows.
    static func docs<T: Decodable>(_ type: T.Type, _ connection: PostgresConnection, _ query: PostgresQuery,
                                   _ logger: Logger) async throws -> [T] {
        var result: [T] = []
        for try await text in try await connection.query(query, logger: logger).decode(String.self) {
            result.append(try decode(type, text))
        }
        return result
    }

    /// The documents `query` selects, read in a read-only transaction scoped to `tenant`.
    func docs<T: Decodable & Sendable>(_ type: T.Type, in tenant: String, _ query: PostgresQuery) async throws(DesklineError) -> [T] {
        let logger = self.logger
        return try await transaction(tenant, readOnly: true) { connection in
            try await Self.docs(type, connection, query, logger)
        }
    }

    // MARK: Tenants

    public func createTenant(_ tenant: Tenant) async throws(DesklineError) {
        var stored = tenant
        stored.createdAt = Timestamp.truncate(tenant.createdAt)
        let doc = try Self.encodeOrFail(stored)
        let s = self.s, logger = self.logger
        try await transaction(tenant.id.rawValue) { connection in
            let rows = try await connection.query("""
                INSERT INTO \(unescaped: s)tenants (tenant_id, doc) VALUES (\(tenant.id.rawValue), \(doc)::jsonb)
                ON CONFLICT (tenant_id) DO NOTHING RETURNING tenant_id
                """, logger: logger).collect()
            guard !rows.isEmpty else { throw DesklineError.conflict("tenant \(tenant.id) already exists") }
        }
    }

    public func tenant(_ id: TenantID) async throws(DesklineError) -> Tenant? {
        try await docs(Tenant.self, in: id.rawValue, "SELECT doc::text FROM \(unescaped: s)tenants WHERE tenant_id = \(id.rawValue)").first
    }

    public func tenants() async throws(DesklineError) -> [Tenant] {
        try await docs(Tenant.self, in: "*", "SELECT doc::text FROM \(unescaped: s)tenants ORDER BY tenant_id COLLATE \"C\"")
    }

    public func updateTenant(_ tenant: Tenant) async throws(DesklineError) -> Tenant {
        let s = self.s, logger = self.logger
        return try await transaction(tenant.id.rawValue) { connection in
            guard var stored = try await Self.docs(Tenant.self, connection, """
                SELECT doc::text FROM \(unescaped: s)tenants WHERE tenant_id = \(tenant.id.rawValue) FOR UPDATE
                """, logger).first else { throw DesklineError.notFound("no tenant \(tenant.id)") }
            stored.name = tenant.name
            stored.motd = tenant.motd
            try await connection.run("""
                UPDATE \(unescaped: s)tenants SET doc = \(try Self.json(stored))::jsonb WHERE tenant_id = \(tenant.id.rawValue)
                """, logger: logger)
            return stored
        }
    }

    static func encodeOrFail<T: Encodable>(_ value: T) throws(DesklineError) -> String {
        do { return try json(value) } catch { throw .storage("could not encode \(T.self): \(error)") }
    }

    /// Locks the tenant's row (its counters) until the transaction ends; nil if there is no
    /// such tenant.
    static func lockTenant(_ tenant: TenantID, _ connection: PostgresConnection, _ s: String, _ logger: Logger) async throws -> Counters? {
        let rows = try await connection.query("""
            SELECT last_customer, last_user, last_ticket, last_call, last_event FROM \(unescaped: s)tenants
            WHERE tenant_id = \(tenant.rawValue) FOR UPDATE
            """, logger: logger).collect()
        guard let row = rows.first else { return nil }
        let (customer, user, ticket, call, event) = try row.decode((Int, Int, Int, Int, Int).self)
        return Counters(customer: customer, user: user, ticket: ticket, call: call, event: event)
    }

    /// A tenant's counters: the last number handed out of each kind.
    struct Counters: Equatable {
        var customer: Int
        var user: Int
        var ticket: Int
        var call: Int
        var event: Int

        func save(_ tenant: TenantID, _ connection: PostgresConnection, _ s: String, _ logger: Logger) async throws {
            try await connection.run("""
                UPDATE \(unescaped: s)tenants SET last_customer = \(customer), last_user = \(user), last_ticket = \(ticket),
                    last_call = \(call), last_event = \(event) WHERE tenant_id = \(tenant.rawValue)
                """, logger: logger)
        }
    }

    // MARK: Customers and users

    public func createCustomer(_ draft: NewCustomer, in tenant: TenantID, at time: Date) async throws(DesklineError) -> Customer {
        let s = self.s, logger = self.logger
        return try await transaction(tenant.rawValue) { connection in
            guard var counters = try await Self.lockTenant(tenant, connection, s, logger) else {
                throw DesklineError.notFound("no tenant \(tenant)")
            }
            let existing = try await connection.query("""
                SELECT customer_id FROM \(unescaped: s)customers WHERE tenant_id = \(tenant.rawValue) AND email = \(draft.email)
                """, logger: logger).collect()
            if let row = existing.first {
                throw DesklineError.conflict("tenant \(tenant) already has a customer with email \(draft.email) (\(try row.decode(String.self)))")
            }
            counters.customer += 1
            let customer = Customer(id: .numbered(counters.customer), tenantId: tenant, name: draft.name, email: draft.email,
                                    phone: draft.phone, createdAt: Timestamp.truncate(time))
            try await connection.run("""
                INSERT INTO \(unescaped: s)customers (tenant_id, customer_id, email, doc)
                VALUES (\(tenant.rawValue), \(customer.id.rawValue), \(draft.email), \(try Self.json(customer))::jsonb)
                """, logger: logger)
            try await counters.save(tenant, connection, s, logger)
            return customer
        }
    }

    public func customer(_ id: CustomerID, in tenant: TenantID) async throws(DesklineError) -> Customer? {
        try await docs(Customer.self, in: tenant.rawValue, """
            SELECT doc::text FROM \(unescaped: s)customers WHERE tenant_id = \(tenant.rawValue) AND customer_id = \(id.rawValue)
            """).first
    }

    public func createUser(_ draft: NewUser, in tenant: TenantID, at time: Date) async throws(DesklineError) -> User {
        let s = self.s, logger = self.logger
        let user = try await transaction(tenant.rawValue) { connection in
            guard var counters = try await Self.lockTenant(tenant, connection, s, logger) else {
                throw DesklineError.notFound("no tenant \(tenant)")
            }
            let taken = try await connection.query("""
                SELECT 1 FROM \(unescaped: s)users WHERE tenant_id = \(tenant.rawValue) AND email = \(draft.email)
                """, logger: logger).collect()
            guard taken.isEmpty else { throw DesklineError.conflict("tenant \(tenant) already has a login \(draft.email)") }
            var customer: Customer?
            if let cid = draft.customerId {
                // Locked: the user's link is written into this very document (an updateCustomer
                // meanwhile would otherwise be overwritten).
                guard let found = try await Self.docs(Customer.self, connection, """
                    SELECT doc::text FROM \(unescaped: s)customers WHERE tenant_id = \(tenant.rawValue) AND customer_id = \(cid.rawValue)
                    FOR UPDATE
                    """, logger).first else { throw DesklineError.notFound("no customer \(cid) in tenant \(tenant)") }
                if let existing = found.userId {
                    throw DesklineError.conflict("customer \(cid) already has a login (user \(existing))")
                }
                customer = found
            }
            counters.user += 1
            let user = User(id: .numbered(counters.user), tenantId: tenant, email: draft.email, displayName: draft.displayName,
                            role: draft.role, passwordHash: draft.passwordHash, customerId: draft.customerId,
                            createdAt: Timestamp.truncate(time), tenantLoginOnly: draft.tenantLoginOnly ? true : nil)
            try await connection.run("""
                INSERT INTO \(unescaped: s)users (tenant_id, user_id, email, doc)
                VALUES (\(tenant.rawValue), \(user.id.rawValue), \(draft.email), \(try Self.json(user))::jsonb)
                """, logger: logger)
            if var customer {
                customer.userId = user.id
                try await connection.run("""
                    UPDATE \(unescaped: s)customers SET doc = \(try Self.json(customer))::jsonb
                    WHERE tenant_id = \(tenant.rawValue) AND customer_id = \(customer.id.rawValue)
                    """, logger: logger)
            }
            try await counters.save(tenant, connection, s, logger)
            return user
        }
        usersChanged(tenant)
        return user
    }

    public func user(_ id: UserID, in tenant: TenantID) async throws(DesklineError) -> User? {
        if let cached = cachedUsers(tenant) { return cached.users.first { $0.id == id } }
        return try await storedUser(id, in: tenant)
    }

    public func storedUser(_ id: UserID, in tenant: TenantID) async throws(DesklineError) -> User? {
        try await docs(User.self, in: tenant.rawValue, """
            SELECT doc::text FROM \(unescaped: s)users WHERE tenant_id = \(tenant.rawValue) AND user_id = \(id.rawValue)
            """).first
    }

    public func accounts(withEmail email: String) async throws(DesklineError) -> [AccountRef] {
        let s = self.s, logger = self.logger
        return try await transaction("*", readOnly: true) { connection in
            var refs: [AccountRef] = []
            for try await (tenant, user) in try await connection.query("""
                SELECT tenant_id, user_id FROM \(unescaped: s)users WHERE email = \(email) ORDER BY made
                """, logger: logger).decode((String, String).self) {
                refs.append(AccountRef(tenantId: TenantID(unchecked: tenant), userId: UserID(unchecked: user)))
            }
            return refs
        }
    }

    @discardableResult
    public func setPasswordHash(_ hash: PasswordHash, for id: UserID, in tenant: TenantID,
                                ifCurrent expected: PasswordHash?) async throws(DesklineError) -> Bool {
        let s = self.s, logger = self.logger
        let changed = try await transaction(tenant.rawValue) { connection in
            guard var user = try await Self.docs(User.self, connection, """
                SELECT doc::text FROM \(unescaped: s)users WHERE tenant_id = \(tenant.rawValue) AND user_id = \(id.rawValue) FOR UPDATE
                """, logger).first else { throw DesklineError.notFound("no user \(id) in tenant \(tenant)") }
            if let expected, user.passwordHash != expected { return false }
            user.passwordHash = hash
            try await connection.run("""
                UPDATE \(unescaped: s)users SET doc = \(try Self.json(user))::jsonb WHERE tenant_id = \(tenant.rawValue) AND user_id = \(id.rawValue)
                """, logger: logger)
            return true
        }
        if changed { usersChanged(tenant) }
        return changed
    }

    public func updateCustomer(_ id: CustomerID, in tenant: TenantID,
                               _ change: @escaping @Sendable (inout Customer, inout User?) throws(DesklineError) -> Void) async throws(DesklineError) -> Customer {
        let s = self.s, logger = self.logger
        let customer = try await transaction(tenant.rawValue) { connection in
            guard var customer = try await Self.docs(Customer.self, connection, """
                SELECT doc::text FROM \(unescaped: s)customers WHERE tenant_id = \(tenant.rawValue) AND customer_id = \(id.rawValue) FOR UPDATE
                """, logger).first else { throw DesklineError.notFound("no customer \(id) in tenant \(tenant)") }
            var user: User?
            if let uid = customer.userId {
                user = try await Self.docs(User.self, connection, """
                    SELECT doc::text FROM \(unescaped: s)users WHERE tenant_id = \(tenant.rawValue) AND user_id = \(uid.rawValue) FOR UPDATE
                    """, logger).first
            }
            try change(&customer, &user)
            try await connection.run("""
                UPDATE \(unescaped: s)customers SET doc = \(try Self.json(customer))::jsonb
                WHERE tenant_id = \(tenant.rawValue) AND customer_id = \(id.rawValue)
                """, logger: logger)
            if let user {
                try await connection.run("""
                    UPDATE \(unescaped: s)users SET doc = \(try Self.json(user))::jsonb
                    WHERE tenant_id = \(tenant.rawValue) AND user_id = \(user.id.rawValue)
                    """, logger: logger)
            }
            return customer
        }
        usersChanged(tenant)
        return customer
    }

    public func users(in tenant: TenantID) async throws(DesklineError) -> [User] {
        try await loadUsers(tenant).users
    }

    public func staff(in tenant: TenantID) async throws(DesklineError) -> Staff {
        try await loadUsers(tenant).staff
    }

    func cachedUsers(_ tenant: TenantID) -> CachedUsers? {
        userCache.withLock { cache in
            guard let entry = cache.entries[tenant], ContinuousClock.now - entry.at < Self.userCacheLifetime else { return nil }
            return entry
        }
    }

    func loadUsers(_ tenant: TenantID) async throws(DesklineError) -> CachedUsers {
        if let cached = cachedUsers(tenant) { return cached }
        let started = ContinuousClock.now
        let generation = userCache.withLock { $0.generation }
        let users = try await docs(User.self, in: tenant.rawValue, """
            SELECT doc::text FROM \(unescaped: s)users WHERE tenant_id = \(tenant.rawValue) ORDER BY user_id
            """)
        let entry = CachedUsers(users: users, staff: Staff(users), at: started)
        userCache.withLock { cache in
            // A list read while this node changed a user may miss the change: not kept.
            guard cache.generation == generation else { return }
            cache.entries[tenant] = entry
        }
        return entry
    }

    /// Drops the kept user list after this node changed a user.
    func usersChanged(_ tenant: TenantID) {
        userCache.withLock { cache in
            cache.generation += 1
            cache.entries[tenant] = nil
        }
    }
}

extension PostgresConnection {
    /// Runs a statement and reads its whole result: postgres-nio reports an error that comes
    /// after the result's description (a failing `pg_notify`, a lock wait's statement timeout)
    /// only to a reader of the rows, and a COMMIT after an unseen error silently rolls back.
    func run(_ query: PostgresQuery, logger: Logger) async throws {
        _ = try await self.query(query, logger: logger).collect()
    }
}
