import DesklineCore
import Foundation
import Synchronization

// Tickets, their append-only conversation logs, per-customer indexes and call requests.
//
//   tenants/<t>/tickets/<n>.jsonl              the ticket's log: one line per change, each holding
//                                              the ticket's state after it and the entry (if any)
//   tenants/<t>/customer-tickets/<c>.jsonl     {"ticket": n} per ticket of customer c
//   tenants/<t>/calls/<n>.jsonl                a call request's log: its state after each change
//   tenants/<t>/customer-calls/<c>.jsonl       {"call": n} per call of customer c
//
// Every file here is an append-only log whose last line is the current state, so a change is one
// appended line (group-committed by the tenant's writer) and reading the state reads one line
// from the end. Only the server writes these, through the tenant's ``TenantWriter``.

/// One line of a ticket's log.
struct TicketLogLine: Codable {
    /// The ticket as it is after this line.
    var ticket: Ticket
    /// The conversation entry this line adds; nil for a change without one (an assignment).
    var entry: TicketEntry?
}

extension TicketLogLine {
    /// See ``PlaceOfLine``.
    var place: EntryPosition { PlaceOfLine.place(entry: entry?.position, ticket.lastSeq, ticket.noteCount) }
}

/// A ticket log line read only for its entry (the ticket's state is skipped).
struct EntryOfLine: Decodable {
    var entry: TicketEntry?
}

/// Where a ticket log line stands in the conversation, all HISTORY's search decodes of a line:
/// its entry's position, or for a line without an entry (an assignment) the ticket's counts
/// after it (the last entry's `seq`, the last note's number). This never decreases along a log:
/// an entry's position is at most its line's counts, and every later entry's is above them.
struct PlaceOfLine: Decodable {
    struct Counts: Decodable {
        var lastSeq: Int
        var noteCount: Int?
    }

    struct Place: Decodable {
        var seq: Int
        var note: Int?
    }

    var ticket: Counts
    var entry: Place?

    var position: EntryPosition {
        Self.place(entry: entry.map { EntryPosition($0.seq, note: $0.note ?? 0) }, ticket.lastSeq, ticket.noteCount)
    }

    static func place(entry: EntryPosition?, _ lastSeq: Int, _ noteCount: Int?) -> EntryPosition {
        entry ?? EntryPosition(lastSeq, note: noteCount ?? 0)
    }
}

struct TicketRef: Codable {
    var ticket: TicketID
}

struct CallRef: Codable {
    var call: CallID
}

/// Customers' ticket numbers as last read from their indexes. A read made before a change must
/// not be kept after it: each change bumps `generation`, and a read is kept only if none
/// happened while it ran.
struct TicketIndexCache {
    struct Key: Hashable {
        var tenant: TenantID
        var customer: CustomerID
    }

    private(set) var tickets: [Key: [TicketID]] = [:]
    private(set) var generation = 0
    static let capacity = 100_000

    mutating func keep(_ ids: [TicketID], _ key: Key, readAt: Int) {
        guard readAt == generation else { return }
        if tickets.count >= Self.capacity { tickets = [:] }
        tickets[key] = ids
    }

    /// An index changed (nil: any of them, as after recovery).
    mutating func changed(_ key: Key?) {
        generation += 1
        if let key { tickets[key] = nil } else { tickets = [:] }
    }
}

extension FileStore {
    func ticketsDir(_ t: TenantID) -> String { tenantDir(t) + "/tickets" }
    func ticketLog(_ id: TicketID, _ t: TenantID) -> String { ticketsDir(t) + "/\(id.number).jsonl" }
    func customerTicketsFile(_ c: CustomerID, _ t: TenantID) -> String { tenantDir(t) + "/customer-tickets/\(c.rawValue).jsonl" }
    func callsDir(_ t: TenantID) -> String { tenantDir(t) + "/calls" }
    func callLog(_ id: CallID, _ t: TenantID) -> String { callsDir(t) + "/\(id.number).jsonl" }
    func customerCallsFile(_ c: CustomerID, _ t: TenantID) -> String { tenantDir(t) + "/customer-calls/\(c.rawValue).jsonl" }

    static let lineEncoder = JSONEncoder.desklineRecords()

    /// One JSON line, newline included.
    static func line<T: Encodable>(_ value: T) throws -> Data {
        var data = try lineEncoder.encode(value)
        data.append(0x0A)
        return data
    }

    /// Every complete, committed line of a log (writers' lines still in flight are not seen).
    /// A last line without its newline is a write that never finished and is skipped.
    func readLines<T: Decodable>(_ type: T.Type, _ path: String) throws -> [T] {
        var read: Data?
        let length = try visibility.visibleLength(path) {
            read = try DurableFile.read(path)
            return Int64(read?.count ?? 0)
        }
        guard var data = read else { return [] }
        if data.count > length { data = data.prefix(Int(length)) }
        var lines = data.split(separator: 0x0A, omittingEmptySubsequences: true)
        if data.last != 0x0A, !lines.isEmpty { lines.removeLast() }
        return try lines.map { try decodeLine(T.self, Data($0), path) }
    }

    /// The last complete line of a log: committed lines only, unless `uncommitted` (for the
    /// tenant's writer, which must see its own batch; not lines of a rolled-back batch that
    /// still wait for their cut).
    func lastLine<T: Decodable>(_ type: T.Type, _ path: String, uncommitted: Bool = false) throws -> T? {
        let visibility = self.visibility
        guard let line = try DurableFile.lastLine(path, visibleLength: { measure in
            uncommitted ? try visibility.writerVisibleLength(path, measure: measure) : try visibility.visibleLength(path, measure: measure)
        }) else { return nil }
        return try decodeLine(T.self, line, path)
    }

    func decodeLine<T: Decodable>(_ type: T.Type, _ line: Data, _ path: String) throws -> T {
        do {
            return try Self.decoder.decode(T.self, from: line)
        } catch {
            logger.error("damaged line in a log", metadata: ["path": "\(path)", "error": "\(error)"])
            throw DesklineError.storage("stored data is damaged; the operator has been told in the server log")
        }
    }

    /// The tenant's writer (created on first use).
    func writer(_ tenant: TenantID) -> TenantWriter {
        writers.withLock { writers in
            if let writer = writers[tenant] { return writer }
            let writer = TenantWriter(tenant: tenant, directory: tenantDir(tenant), threadPool: threadPool, visibility: visibility, faults: faults,
                                      openLogBudget: openLogBudget, groupCommitInterval: groupCommitInterval,
                                      idleLogsKept: idleLogsKept, logger: logger,
                                      beforeCommit: { batch in
                                          self.writeEventLines(batch, tenant)
                                          if batch.failure == nil { self.pruneEventLog(after: batch.events) }
                                      },
                                      published: { [eventFeed] in eventFeed.publish($0) }) { memory in
                if self.recoveryNeeded { self.recoverTenant(tenant) }
            }
            writers[tenant] = writer
            return writer
        }
    }

    /// Every `<n>.jsonl` number in a directory, ascending.
    func logNumbers(in dir: String) throws -> [Int] {
        try DurableFile.list(dir).compactMap { name in
            name.hasSuffix(".jsonl") ? Int(name.dropLast(6)) : nil
        }.sorted()
    }

    // MARK: Store

    public func updateCustomer(_ id: CustomerID, in tenant: TenantID,
                               _ change: @escaping @Sendable (inout Customer, inout User?) throws(DesklineError) -> Void) async throws(DesklineError) -> Customer {
        try await io {
            try self.changeAccounts { transaction in
                defer { self.usersChanged(tenant) }
                guard var customer = try self.load(Customer.self, self.customerFile(id, tenant)) else {
                    throw DesklineError.notFound("no customer \(id) in tenant \(tenant)")
                }
                let userBefore = try customer.userId.flatMap { try self.load(User.self, self.userFile($0, tenant)) }
                var user = userBefore
                let customerBefore = customer
                try change(&customer, &user)
                var writes: [AccountTransaction.Write] = []
                if customer != customerBefore { writes.append(try self.write(customer, self.customerFile(id, tenant))) }
                if let user, user != userBefore { writes.append(try self.write(user, self.userFile(user.id, tenant))) }
                if !writes.isEmpty { try transaction.commit(writes) }
                return customer
            }
        }
    }

    public func openTicket(in tenant: TenantID, _ decide: @escaping NewTicketDecision) async throws(DesklineError) -> Change {
        // Once durable: the customer's kept index is dropped before anyone hears of the ticket
        // (the writer publishes a batch's events after its jobs' `whenStored`).
        let forget: @Sendable (Change) -> Void = { change in
            guard let customer = change.ticket?.customerId else { return }
            self.ticketIndexCache.withLock { $0.changed(TicketIndexCache.Key(tenant: tenant, customer: customer)) }
        }
        return try await writer(tenant).write(whenStored: forget) { batch, memory -> Change in
            try self.requireTenant(tenant)
            try DurableFile.makeDirectories(self.ticketsDir(tenant))
            try DurableFile.makeDirectories(self.tenantDir(tenant) + "/customer-tickets")
            // The highest log on disk is the last number handed out (a number whose creation was
            // never acknowledged may be handed out again, never a used one).
            let last = try memory.lastTicket ?? self.logNumbers(in: self.ticketsDir(tenant)).last
            let id = TicketID.next(after: last.map(TicketID.init))
            let change = try decide(id)
            try change.validate(.ticket(id, customer: nil), in: tenant)
            guard let ticket = change.ticket else { return change }
            // Who is told, before anything is written (see changeTicket).
            let inboxLines = try self.inboxLines(of: change, in: tenant, memory)
            memory.lastTicket = id.number
            // The ticket's log first, then the index: recovery after a crash in between adds a
            // missing index line; an index line never points at a ticket that is not there.
            let line = TicketLogLine(ticket: ticket, entry: change.entry)
            try batch.append(JSONLine.line(line), to: self.ticketLog(id, tenant))
            try batch.append(Self.line(TicketRef(ticket: id)), to: self.customerTicketsFile(ticket.customerId, tenant))
            memory.remember(ticket)
            return try self.commitEffects(of: change, in: tenant, inboxLines, batch, &memory, ticketLine: line, first: true)
        }
    }

    public func tickets(in tenant: TenantID) async throws(DesklineError) -> [Ticket] {
        try await io {
            try self.logNumbers(in: self.ticketsDir(tenant)).compactMap { n in
                try self.lastLine(TicketLogLine.self, self.ticketLog(TicketID(n), tenant))?.ticket
            }
        }
    }

    /// A customer's ticket numbers. Every customer command about a ticket asks (is it theirs?),
    /// so they are kept in memory; only this server's writer adds to the index, and it drops the
    /// kept list once the new line is durable.
    public func ticketIDs(ofCustomer customer: CustomerID, in tenant: TenantID) async throws(DesklineError) -> [TicketID] {
        let key = TicketIndexCache.Key(tenant: tenant, customer: customer)
        let (kept, generation) = ticketIndexCache.withLock { ($0.tickets[key], $0.generation) }
        if let kept { return kept }
        let ids = try await io { try self.readLines(TicketRef.self, self.customerTicketsFile(customer, tenant)).map(\.ticket) }
        ticketIndexCache.withLock { $0.keep(ids, key, readAt: generation) }
        return ids
    }

    public func ticket(_ id: TicketID, in tenant: TenantID) async throws(DesklineError) -> Ticket? {
        try await io { try self.lastLine(TicketLogLine.self, self.ticketLog(id, tenant))?.ticket }
    }

    public func tickets(ofCustomer customer: CustomerID, in tenant: TenantID) async throws(DesklineError) -> [Ticket] {
        try await io {
            try self.readLines(TicketRef.self, self.customerTicketsFile(customer, tenant)).compactMap { ref in
                try self.lastLine(TicketLogLine.self, self.ticketLog(ref.ticket, tenant))?.ticket
            }.filter { $0.customerId == customer }
        }
    }

    public func changeTicket(_ id: TicketID, in tenant: TenantID, whenQueued: (@Sendable () -> Void)?,
                             _ decide: @escaping TicketDecision) async throws(DesklineError) -> Change? {
        try await writer(tenant).write(whenQueued: whenQueued) { batch, memory -> Change? in
            let path = self.ticketLog(id, tenant)
            guard let before = try memory.tickets[id] ?? self.lastLine(TicketLogLine.self, path, uncommitted: true)?.ticket else { return nil }
            let change = try decide(TicketState(ticket: before, customerLogin: self.customerLogin(before.customerId, in: tenant)))
            try change.validate(.ticket(id, customer: before.customerId), in: tenant)
            guard let ticket = change.ticket else { return change }
            // Who is told, and their inbox lines, are worked out before anything is written: if
            // that fails, this change is refused alone and the rest of the batch goes on.
            let inboxLines = try self.inboxLines(of: change, in: tenant, memory)
            // One line holds both the entry and the ticket's new state: they are stored together
            // or not at all.
            var line: TicketLogLine?
            if ticket != before || change.entry != nil {
                line = TicketLogLine(ticket: ticket, entry: change.entry)
                try batch.append(JSONLine.line(line!), to: path)
                memory.remember(ticket)
            }
            // The notifications and the event go into the same batch, after the entry they are about.
            return try self.commitEffects(of: change, in: tenant, inboxLines, batch, &memory, ticketLine: line)
        }
    }

    /// Reads a customer's login when a decision asks (inside the tenant's write).
    func customerLogin(_ customer: CustomerID, in tenant: TenantID) -> @Sendable () throws(DesklineError) -> UserID? {
        { () throws(DesklineError) -> UserID? in
            do {
                return try self.load(Customer.self, self.customerFile(customer, tenant))?.userId
            } catch let error as DesklineError {
                throw error
            } catch {
                self.logger.error("a customer record could not be read", metadata: ["tenant": "\(tenant)", "customer": "\(customer)", "error": "\(error)"])
                throw .storage("the store could not read a customer record; nothing was changed")
            }
        }
    }

    public func entries(of ticket: TicketID, in tenant: TenantID, after: EntryPosition?, before: EntryPosition?, limit: Int,
                        includeNotes: Bool) async throws(DesklineError) -> [TicketEntry] {
        try await io {
            let path = self.ticketLog(ticket, tenant)
            let visibility = self.visibility
            guard limit > 0, let log = try LogReader(path, visibleLength: { try visibility.visibleLength(path, measure: $0) }) else { return [] }
            defer { self.historyBytesRead.add(log.bytesRead, ordering: .relaxed) }
            return try self.page(of: log, after: after, before: before, limit: limit, includeNotes: includeNotes)
        }
    }

    /// A page of a ticket's log, reading only the page and O(log n) lines to find it: entries'
    /// positions grow along the log (note 5.n sits after entry 5: "after 5" includes it, "before
    /// 6" too), so a binary search over the log's bytes finds the first line past `after` (to
    /// read forwards from) or at `before` (to read backwards from); the latest page is read from
    /// the end. A page of a customer's view also reads the notes among its entries.
    func page(of log: LogReader, after: EntryPosition?, before: EntryPosition?, limit: Int, includeNotes: Bool) throws -> [TicketEntry] {
        func place(_ line: Data) throws -> EntryPosition { try decodeLine(PlaceOfLine.self, line, log.path).position }
        func entry(_ line: Data) throws -> TicketEntry? {
            line.isEmpty ? nil : try decodeLine(EntryOfLine.self, line, log.path).entry
        }
        func shown(_ entry: TicketEntry) -> Bool { includeNotes || entry.isVisibleToCustomer }
        var page: [TicketEntry] = []
        if let after {
            // Oldest first, from the first line past `after` up to `before`.
            let start = try log.firstLine { try place($0) > after }
            try log.forEachLine(from: start) { line, _, _ in
                guard let entry = try entry(line) else { return true }
                if let before, entry.position >= before { return false }
                if shown(entry) { page.append(entry) }
                return page.count < limit
            }
            return page
        }
        // Newest first, from the end or from the first line at `before`.
        let end = try before.map { before in try log.firstLine { try place($0) >= before } }
        try log.forEachLineBackward(before: end) { line in
            guard let entry = try entry(line), shown(entry) else { return true }
            page.append(entry)
            return page.count < limit
        }
        return page.reversed()
    }

    public func fileCall(in tenant: TenantID, _ decide: @escaping NewCallDecision) async throws(DesklineError) -> Change {
        try await writer(tenant).write { batch, memory -> Change in
            try self.requireTenant(tenant)
            try DurableFile.makeDirectories(self.callsDir(tenant))
            try DurableFile.makeDirectories(self.tenantDir(tenant) + "/customer-calls")
            let last = try memory.lastCall ?? self.logNumbers(in: self.callsDir(tenant)).last
            let id = CallID.next(after: last.map(CallID.init))
            let change = try decide(id)
            try change.validate(.call(id, customer: nil), in: tenant)
            guard let call = change.call else { return change }
            let inboxLines = try self.inboxLines(of: change, in: tenant, memory)
            memory.lastCall = id.number
            try batch.append(Self.line(call), to: self.callLog(id, tenant))
            try batch.append(Self.line(CallRef(call: id)), to: self.customerCallsFile(call.customerId, tenant))
            return try self.commitEffects(of: change, in: tenant, inboxLines, batch, &memory)
        }
    }

    public func calls(ofCustomer customer: CustomerID, in tenant: TenantID) async throws(DesklineError) -> [CallRequest] {
        try await io {
            try self.readLines(CallRef.self, self.customerCallsFile(customer, tenant)).compactMap { ref in
                try self.lastLine(CallRequest.self, self.callLog(ref.call, tenant))
            }.filter { $0.customerId == customer }
        }
    }

    public func calls(in tenant: TenantID) async throws(DesklineError) -> [CallRequest] {
        try await io {
            try self.logNumbers(in: self.callsDir(tenant)).compactMap { n in
                try self.lastLine(CallRequest.self, self.callLog(CallID(n), tenant))
            }
        }
    }

    public func changeCall(_ id: CallID, in tenant: TenantID, _ decide: @escaping CallDecision) async throws(DesklineError) -> Change? {
        try await writer(tenant).write { batch, memory -> Change? in
            let path = self.callLog(id, tenant)
            guard let before = try self.lastLine(CallRequest.self, path, uncommitted: true) else { return nil }
            let ticket: @Sendable () throws(DesklineError) -> Ticket? = { () throws(DesklineError) -> Ticket? in
                guard let about = before.ticketId else { return nil }
                do {
                    return try self.lastLine(TicketLogLine.self, self.ticketLog(about, tenant), uncommitted: true)?.ticket
                } catch let error as DesklineError {
                    throw error
                } catch {
                    throw .storage("the store could not read a ticket; nothing was changed")
                }
            }
            let change = try decide(CallState(call: before, customerLogin: self.customerLogin(before.customerId, in: tenant), ticket: ticket))
            try change.validate(.call(id, customer: before.customerId), in: tenant)
            guard let call = change.call else { return change }
            let inboxLines = try self.inboxLines(of: change, in: tenant, memory)
            if call != before { try batch.append(Self.line(call), to: path) }
            return try self.commitEffects(of: change, in: tenant, inboxLines, batch, &memory)
        }
    }
}
