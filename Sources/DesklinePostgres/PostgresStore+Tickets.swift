import DesklineCore
import Foundation
import Logging
import PostgresNIO
import Synchronization

// Tickets, calls and inboxes: reads are scoped transactions; writes go through the tenant's
// queue (``WriteQueues``) and are committed in batches by ``commit(_:in:until:)``.

/// A write of a tenant's tickets or calls, as the store port hands it over.
enum Write: Sendable {
    case openTicket(NewTicketDecision)
    case changeTicket(TicketID, TicketDecision)
    case fileCall(NewCallDecision)
    case changeCall(CallID, CallDecision)

    /// Whether the write makes something new (so a missing tenant is `notFound`, not nil).
    var creates: Bool {
        switch self {
        case .openTicket, .fileCall: true
        case .changeTicket, .changeCall: false
        }
    }
}

/// One queue of writes per tenant on this node: a write is stored after every write submitted
/// before it, and the writes that wait while a transaction commits go into the next one together.
final class WriteQueues: Sendable {
    struct Pending: Sendable {
        let write: Write
        /// When its caller stops waiting (`requestTimeoutSeconds` after it was queued).
        let deadline: ContinuousClock.Instant
        let done: CheckedContinuation<Result<Change?, DesklineError>, Never>
    }

    private struct Queue {
        var pending: [Pending] = []
        var running = false
    }

    private let queues = Mutex<[TenantID: Queue]>([:])

    /// Most writes committed in one transaction.
    static let batchLimit = 64

    /// Queues `pending`; true if the caller must start draining the tenant's queue.
    func enqueue(_ pending: Pending, for tenant: TenantID) -> Bool {
        queues.withLock { queues in
            queues[tenant, default: Queue()].pending.append(pending)
            if queues[tenant]!.running { return false }
            queues[tenant]!.running = true
            return true
        }
    }

    /// The next writes to commit, oldest first; nil (and the queue stops running) if none wait.
    func next(_ tenant: TenantID) -> [Pending]? {
        queues.withLock { queues in
            guard var queue = queues[tenant], !queue.pending.isEmpty else {
                queues[tenant] = nil
                return nil
            }
            let batch = Array(queue.pending.prefix(Self.batchLimit))
            queue.pending.removeFirst(batch.count)
            queues[tenant] = queue
            return batch
        }
    }
}

extension PostgresStore {
    // MARK: Ticket and call writes

    public func openTicket(in tenant: TenantID, _ decide: @escaping NewTicketDecision) async throws(DesklineError) -> Change {
        guard let change = try await submit(.openTicket(decide), in: tenant, whenQueued: nil) else {
            throw .notFound("no tenant \(tenant)")
        }
        return change
    }

    public func changeTicket(_ id: TicketID, in tenant: TenantID, whenQueued: (@Sendable () -> Void)?,
                             _ decide: @escaping TicketDecision) async throws(DesklineError) -> Change? {
        try await submit(.changeTicket(id, decide), in: tenant, whenQueued: whenQueued)
    }

    public func fileCall(in tenant: TenantID, _ decide: @escaping NewCallDecision) async throws(DesklineError) -> Change {
        guard let change = try await submit(.fileCall(decide), in: tenant, whenQueued: nil) else {
            throw .notFound("no tenant \(tenant)")
        }
        return change
    }

    public func changeCall(_ id: CallID, in tenant: TenantID, _ decide: @escaping CallDecision) async throws(DesklineError) -> Change? {
        try await submit(.changeCall(id, decide), in: tenant, whenQueued: nil)
    }

    /// Queues `write` behind the tenant's earlier ones and waits until it was committed (or
    /// refused). `whenQueued` runs once it has its place.
    func submit(_ write: Write, in tenant: TenantID, whenQueued: (@Sendable () -> Void)?) async throws(DesklineError) -> Change? {
        let result = await withCheckedContinuation { (done: CheckedContinuation<Result<Change?, DesklineError>, Never>) in
            let deadline = ContinuousClock.now + .seconds(settings.requestTimeoutSeconds)
            let start = queues.enqueue(.init(write: write, deadline: deadline, done: done), for: tenant)
            whenQueued?()
            if start { Task { await self.drain(tenant) } }
        }
        return try result.get()
    }

    /// Commits the tenant's queued writes, a batch per transaction, until none wait. A write
    /// whose caller's time (`requestTimeoutSeconds` from when it was queued) ran out while it
    /// waited is refused before its transaction starts (nothing of it stored), and a batch's
    /// transaction ends at its earliest deadline: a write never takes longer than that in all.
    ///
    /// Under overload the front of a batch may have waited most of its time: the writes with less
    /// than half of it left (a prefix: deadlines follow the order of submission) then commit in a
    /// transaction of their own, so that the fresher writes behind them keep their whole time
    /// instead of sharing the front's remainder (and failing with it).
    func drain(_ tenant: TenantID) async {
        let timeout = Duration.seconds(settings.requestTimeoutSeconds)
        while let batch = queues.next(tenant) {
            var rest = batch[...]
            while !rest.isEmpty {
                let now = ContinuousClock.now
                while let late = rest.first, late.deadline <= now {
                    late.done.resume(returning: .failure(.storage("the database did not answer within \(settings.requestTimeoutSeconds) s")))
                    rest.removeFirst()
                }
                guard let first = rest.first else { break }
                let near = rest.prefix { $0.deadline - now < timeout / 2 }.count
                let part = rest.prefix(near == 0 ? rest.count : near)
                let results = await commit(part.map(\.write), in: tenant, until: first.deadline)
                for (pending, result) in zip(part, results) { pending.done.resume(returning: result) }
                rest.removeFirst(part.count)
            }
        }
    }

    /// Runs `writes` in one transaction holding the tenant's row, in order, each deciding on what
    /// the ones before it wrote; a decision that throws refuses its write alone. Publishes the
    /// committed events, then returns each write's outcome (all `storage` if the transaction
    /// failed: none of them was stored).
    func commit(_ writes: [Write], in tenant: TenantID, until deadline: ContinuousClock.Instant) async -> [Result<Change?, DesklineError>] {
        let s = self.s, logger = self.logger, channel = self.channel
        do {
            let (results, events) = try await transaction(tenant.rawValue, until: deadline) { connection in
                guard var counters = try await Self.lockTenant(tenant, connection, s, logger) else {
                    let none: [Result<Change?, DesklineError>] = writes.map { $0.creates ? .failure(.notFound("no tenant \(tenant)")) : .success(nil) }
                    return (none, [TicketEvent]())
                }
                let before = counters
                var results: [Result<Change?, DesklineError>] = []
                var events: [TicketEvent] = []
                for write in writes {
                    do {
                        let change = try await Self.apply(write, in: tenant, connection, &counters, s, logger)
                        if let event = change?.event { events.append(event) }
                        results.append(.success(change))
                    } catch let refused as DesklineError {
                        // Thrown by a decision or its check, before anything of this write was
                        // written.
                        results.append(.failure(refused))
                    }
                }
                if counters != before { try await counters.save(tenant, connection, s, logger) }
                if let last = events.last?.seq {
                    try await connection.run("SELECT pg_notify(\(channel), \(tenant.rawValue + " " + String(last)))", logger: logger)
                }
                return (results, events)
            }
            publish(events, of: tenant)
            return results
        } catch {
            return writes.map { _ in .failure(error) }
        }
    }

    /// Runs one write inside ``commit(_:in:until:)``'s transaction. Throws ``DesklineError`` only before
    /// it writes anything (a refused decision); PostgreSQL's errors end the transaction.
    static func apply(_ write: Write, in tenant: TenantID, _ connection: PostgresConnection, _ counters: inout Counters,
                      _ s: String, _ logger: Logger) async throws -> Change? {
        switch write {
        case .openTicket(let decide):
            let id = TicketID.next(after: counters.ticket == 0 ? nil : TicketID(counters.ticket))
            let change = try decide(id)
            try change.validate(.ticket(id, customer: nil), in: tenant)
            guard let ticket = change.ticket else { return change }
            let docs = try (json(ticket), change.entry.map(json))
            counters.ticket = id.number
            try await connection.run("""
                INSERT INTO \(unescaped: s)tickets (tenant_id, number, customer_id, doc)
                VALUES (\(tenant.rawValue), \(id.number), \(ticket.customerId.rawValue), \(docs.0)::jsonb)
                """, logger: logger)
            if let entry = change.entry, let doc = docs.1 { try await insert(entry, doc, of: id, tenant, connection, s, logger) }
            return try await finish(change, in: tenant, connection, &counters, s, logger)

        case .changeTicket(let id, let decide):
            let rows = try await connection.query("""
                SELECT t.doc::text, c.doc::text FROM \(unescaped: s)tickets t
                LEFT JOIN \(unescaped: s)customers c ON c.tenant_id = t.tenant_id AND c.customer_id = t.customer_id
                WHERE t.tenant_id = \(tenant.rawValue) AND t.number = \(id.number)
                """, logger: logger).collect()
            guard let row = rows.first else { return nil }
            let (ticketDoc, customerDoc) = try row.decode((String, String?).self)
            let before = try decode(Ticket.self, ticketDoc)
            let login = try customerDoc.map { try decode(Customer.self, $0) }?.userId
            let change = try decide(TicketState(ticket: before, customerLogin: { login }))
            try change.validate(.ticket(id, customer: before.customerId), in: tenant)
            guard let ticket = change.ticket else { return change }
            let docs = try (json(ticket), change.entry.map(json))
            if ticket != before || change.entry != nil {
                try await connection.run("""
                    UPDATE \(unescaped: s)tickets SET doc = \(docs.0)::jsonb WHERE tenant_id = \(tenant.rawValue) AND number = \(id.number)
                    """, logger: logger)
                if let entry = change.entry, let doc = docs.1 { try await insert(entry, doc, of: id, tenant, connection, s, logger) }
            }
            return try await finish(change, in: tenant, connection, &counters, s, logger)

        case .fileCall(let decide):
            let id = CallID.next(after: counters.call == 0 ? nil : CallID(counters.call))
            let change = try decide(id)
            try change.validate(.call(id, customer: nil), in: tenant)
            guard let call = change.call else { return change }
            let doc = try json(call)
            counters.call = id.number
            try await connection.run("""
                INSERT INTO \(unescaped: s)calls (tenant_id, number, customer_id, doc)
                VALUES (\(tenant.rawValue), \(id.number), \(call.customerId.rawValue), \(doc)::jsonb)
                """, logger: logger)
            return try await finish(change, in: tenant, connection, &counters, s, logger)

        case .changeCall(let id, let decide):
            let rows = try await connection.query("""
                SELECT k.doc::text, c.doc::text, t.doc::text FROM \(unescaped: s)calls k
                LEFT JOIN \(unescaped: s)customers c ON c.tenant_id = k.tenant_id AND c.customer_id = k.customer_id
                LEFT JOIN \(unescaped: s)tickets t ON t.tenant_id = k.tenant_id AND t.number = (k.doc->>'ticketId')::bigint
                WHERE k.tenant_id = \(tenant.rawValue) AND k.number = \(id.number)
                """, logger: logger).collect()
            guard let row = rows.first else { return nil }
            let (callDoc, customerDoc, ticketDoc) = try row.decode((String, String?, String?).self)
            let before = try decode(CallRequest.self, callDoc)
            let login = try customerDoc.map { try decode(Customer.self, $0) }?.userId
            let ticket = try ticketDoc.map { try decode(Ticket.self, $0) }
            let change = try decide(CallState(call: before, customerLogin: { login }, ticket: { ticket }))
            try change.validate(.call(id, customer: before.customerId), in: tenant)
            guard let call = change.call else { return change }
            let doc = try json(call)
            try await connection.run("""
                UPDATE \(unescaped: s)calls SET doc = \(doc)::jsonb WHERE tenant_id = \(tenant.rawValue) AND number = \(id.number)
                """, logger: logger)
            return try await finish(change, in: tenant, connection, &counters, s, logger)
        }
    }

    static func insert(_ entry: TicketEntry, _ doc: String, of ticket: TicketID, _ tenant: TenantID,
                       _ connection: PostgresConnection, _ s: String, _ logger: Logger) async throws {
        try await connection.run("""
            INSERT INTO \(unescaped: s)entries (tenant_id, ticket, seq, note, visible, doc)
            VALUES (\(tenant.rawValue), \(ticket.number), \(entry.seq), \(entry.note ?? 0), \(entry.isVisibleToCustomer), \(doc)::jsonb)
            """, logger: logger)
    }

    /// Stores a change's inbox lines (numbered in each inbox) and its event (numbered in the
    /// tenant's log); returns the change as committed.
    static func finish(_ change: Change, in tenant: TenantID, _ connection: PostgresConnection, _ counters: inout Counters,
                       _ s: String, _ logger: Logger) async throws -> Change {
        var change = change
        if let inbox = change.inbox, !inbox.users.isEmpty {
            var notification = inbox.notification
            notification.at = Timestamp.truncate(notification.at)
            notification.id = 0
            var seen = Set<UserID>()
            let users = inbox.users.filter { seen.insert($0).inserted }.map(\.rawValue)
            try await connection.run("""
                WITH numbered AS (
                    INSERT INTO \(unescaped: s)inboxes (tenant_id, user_id, last_id)
                    SELECT \(tenant.rawValue), u, 1 FROM unnest(\(users)::text[]) AS u
                    ON CONFLICT (tenant_id, user_id) DO UPDATE SET last_id = \(unescaped: s)inboxes.last_id + 1
                    RETURNING user_id, last_id)
                INSERT INTO \(unescaped: s)notifications (tenant_id, user_id, id, doc)
                SELECT \(tenant.rawValue), user_id, last_id, \(try json(notification))::jsonb FROM numbered
                """, logger: logger)
        }
        if var event = change.event {
            counters.event += 1
            event.seq = counters.event
            try await connection.run("""
                INSERT INTO \(unescaped: s)events (tenant_id, seq, at, doc)
                VALUES (\(tenant.rawValue), \(counters.event), \(event.at), \(try json(event))::jsonb)
                """, logger: logger)
            change.event = event
        }
        return change
    }

    // MARK: Ticket and call reads

    public func ticket(_ id: TicketID, in tenant: TenantID) async throws(DesklineError) -> Ticket? {
        try await docs(Ticket.self, in: tenant.rawValue, """
            SELECT doc::text FROM \(unescaped: s)tickets WHERE tenant_id = \(tenant.rawValue) AND number = \(id.number)
            """).first
    }

    public func ticketIDs(ofCustomer customer: CustomerID, in tenant: TenantID) async throws(DesklineError) -> [TicketID] {
        let s = self.s, logger = self.logger
        return try await transaction(tenant.rawValue, readOnly: true) { connection in
            var ids: [TicketID] = []
            for try await number in try await connection.query("""
                SELECT number FROM \(unescaped: s)tickets WHERE tenant_id = \(tenant.rawValue) AND customer_id = \(customer.rawValue)
                ORDER BY number
                """, logger: logger).decode(Int.self) {
                ids.append(TicketID(number))
            }
            return ids
        }
    }

    public func tickets(in tenant: TenantID) async throws(DesklineError) -> [Ticket] {
        try await docs(Ticket.self, in: tenant.rawValue, """
            SELECT doc::text FROM \(unescaped: s)tickets WHERE tenant_id = \(tenant.rawValue) ORDER BY number
            """)
    }

    public func tickets(ofCustomer customer: CustomerID, in tenant: TenantID) async throws(DesklineError) -> [Ticket] {
        try await docs(Ticket.self, in: tenant.rawValue, """
            SELECT doc::text FROM \(unescaped: s)tickets WHERE tenant_id = \(tenant.rawValue) AND customer_id = \(customer.rawValue)
            ORDER BY number
            """)
    }

    public func entries(of ticket: TicketID, in tenant: TenantID, after: EntryPosition?, before: EntryPosition?, limit: Int,
                        includeNotes: Bool) async throws(DesklineError) -> [TicketEntry] {
        guard limit > 0 else { return [] }
        // Positions as (seq, note) with note 0 for an entry: a row comparison the primary key
        // answers in order.
        let low = after ?? EntryPosition(-1), high = before ?? EntryPosition(Int(Int32.max))
        let newestFirst = after == nil
        let page = try await docs(TicketEntry.self, in: tenant.rawValue, """
            SELECT doc::text FROM \(unescaped: s)entries
            WHERE tenant_id = \(tenant.rawValue) AND ticket = \(ticket.number)
              AND (seq, note) > (\(low.seq), \(low.note)) AND (seq, note) < (\(high.seq), \(high.note))
              AND (visible OR \(includeNotes))
            ORDER BY \(unescaped: newestFirst ? "seq DESC, note DESC" : "seq, note") LIMIT \(limit)
            """)
        return newestFirst ? page.reversed() : page
    }

    public func calls(ofCustomer customer: CustomerID, in tenant: TenantID) async throws(DesklineError) -> [CallRequest] {
        try await docs(CallRequest.self, in: tenant.rawValue, """
            SELECT doc::text FROM \(unescaped: s)calls WHERE tenant_id = \(tenant.rawValue) AND customer_id = \(customer.rawValue)
            ORDER BY number
            """)
    }

    public func calls(in tenant: TenantID) async throws(DesklineError) -> [CallRequest] {
        try await docs(CallRequest.self, in: tenant.rawValue, """
            SELECT doc::text FROM \(unescaped: s)calls WHERE tenant_id = \(tenant.rawValue) ORDER BY number
            """)
    }

    // MARK: Inboxes

    public func unreadNotificationCount(of user: UserID, in tenant: TenantID) async throws(DesklineError) -> Int {
        let s = self.s, logger = self.logger
        return try await transaction(tenant.rawValue, readOnly: true) { connection in
            let rows = try await connection.query("""
                SELECT (last_id - read_up_to - cardinality(read_ids))::bigint FROM \(unescaped: s)inboxes
                WHERE tenant_id = \(tenant.rawValue) AND user_id = \(user.rawValue)
                """, logger: logger).collect()
            return max(0, try rows.first?.decode(Int.self) ?? 0)
        }
    }

    public func inbox(of user: UserID, in tenant: TenantID) async throws(DesklineError) -> Inbox {
        let s = self.s, logger = self.logger
        return try await transaction(tenant.rawValue, readOnly: true) { connection in
            let state = try await connection.query("""
                SELECT last_id, read_up_to, read_ids FROM \(unescaped: s)inboxes WHERE tenant_id = \(tenant.rawValue) AND user_id = \(user.rawValue)
                """, logger: logger).collect()
            guard let row = state.first else { return Inbox(items: [], readUpTo: 0, readIds: [], lastId: 0) }
            let (lastId, readUpTo, readIds) = try row.decode((Int, Int, [Int]).self)
            var items: [DesklineCore.Notification] = []
            for try await (id, doc) in try await connection.query("""
                SELECT id, doc::text FROM \(unescaped: s)notifications WHERE tenant_id = \(tenant.rawValue) AND user_id = \(user.rawValue)
                ORDER BY id
                """, logger: logger).decode((Int, String).self) {
                var item = try Self.decode(DesklineCore.Notification.self, doc)
                item.id = id
                items.append(item)
            }
            return Inbox(items: items, readUpTo: readUpTo, readIds: Set(readIds), lastId: lastId)
        }
    }

    public func markNotificationsRead(_ id: Int?, of user: UserID, in tenant: TenantID) async throws(DesklineError) {
        let s = self.s, logger = self.logger
        try await transaction(tenant.rawValue) { connection in
            let state = try await connection.query("""
                SELECT last_id, read_up_to, read_ids FROM \(unescaped: s)inboxes
                WHERE tenant_id = \(tenant.rawValue) AND user_id = \(user.rawValue) FOR UPDATE
                """, logger: logger).collect()
            var (lastId, readUpTo, readIds) = try state.first.map { try $0.decode((Int, Int, [Int]).self) } ?? (0, 0, [])
            var read = Set(readIds)
            if let id {
                guard id >= 1, id <= lastId else { throw DesklineError.notFound("You have no notification \(id).") }
                if id > readUpTo { read.insert(id) }
                while read.remove(readUpTo + 1) != nil { readUpTo += 1 }
            } else {
                readUpTo = lastId
                read = []
            }
            guard !state.isEmpty else { return }
            readIds = read.sorted()
            try await connection.run("""
                UPDATE \(unescaped: s)inboxes SET read_up_to = \(readUpTo), read_ids = \(readIds)
                WHERE tenant_id = \(tenant.rawValue) AND user_id = \(user.rawValue)
                """, logger: logger)
        }
    }
}
