import DesklineCore
import Foundation
import Synchronization

// Tickets, their append-only conversation logs, per-customer indexes and call requests.
//
//   tenants/<t>/tickets/counters.json          {"ticket": N, "call": N}
//   tenants/<t>/tickets/<n>.json               the ticket's current state (atomic replace)
//   tenants/<t>/tickets/<n>.jsonl              its entries, one JSON object a line (append + fsync)
//   tenants/<t>/customer-tickets/<c>.jsonl     {"ticket": n} per ticket of customer c (append)
//   tenants/<t>/calls/<n>.json                 a call request
//   tenants/<t>/customer-calls/<c>.jsonl       {"call": n} per call of customer c (append)
//
// Only the server writes these, one tenant at a time under that tenant's in-process lock.

/// One lock per tenant for ticket and call writes, so tenants never wait for each other.
final class TenantLocks: Sendable {
    final class Lock: Sendable {
        let mutex = Mutex(())
    }

    private let locks = Mutex<[TenantID: Lock]>([:])

    func lock(_ tenant: TenantID) -> Lock {
        locks.withLock { locks in
            if let lock = locks[tenant] { return lock }
            let lock = Lock()
            locks[tenant] = lock
            return lock
        }
    }
}

struct TicketCounters: Codable {
    var ticket = 1000
    var call = 0
}

struct TicketRef: Codable {
    var ticket: TicketID
}

struct CallRef: Codable {
    var call: CallID
}

extension FileStore {
    func ticketsDir(_ t: TenantID) -> String { tenantDir(t) + "/tickets" }
    func ticketFile(_ id: TicketID, _ t: TenantID) -> String { ticketsDir(t) + "/\(id.number).json" }
    func ticketLog(_ id: TicketID, _ t: TenantID) -> String { ticketsDir(t) + "/\(id.number).jsonl" }
    func customerTicketsFile(_ c: CustomerID, _ t: TenantID) -> String { tenantDir(t) + "/customer-tickets/\(c.rawValue).jsonl" }
    func callFile(_ id: CallID, _ t: TenantID) -> String { tenantDir(t) + "/calls/\(id.number).json" }
    func customerCallsFile(_ c: CustomerID, _ t: TenantID) -> String { tenantDir(t) + "/customer-calls/\(c.rawValue).jsonl" }

    private static let lineEncoder: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        e.dateEncodingStrategy = .custom { date, encoder in
            var c = encoder.singleValueContainer()
            try c.encode(Timestamp.format(date))
        }
        return e
    }()

    /// Appends one JSON line to a log and fsyncs it.
    func appendLine<T: Encodable>(_ value: T, _ path: String) throws {
        var data = try Self.lineEncoder.encode(value)
        data.append(0x0A)
        try DurableFile.append(path, data)
    }

    /// Every complete line of a JSON-lines log. A last line without its newline is a write that
    /// never finished (it was never acknowledged) and is skipped.
    func readLines<T: Decodable>(_ type: T.Type, _ path: String) throws -> [T] {
        guard let data = try DurableFile.read(path) else { return [] }
        var lines = data.split(separator: 0x0A, omittingEmptySubsequences: true)
        if data.last != 0x0A, !lines.isEmpty { lines.removeLast() }
        return try lines.map { line in
            do {
                return try Self.decoder.decode(T.self, from: Data(line))
            } catch {
                logger.error("damaged line in a log", metadata: ["path": "\(path)", "error": "\(error)"])
                throw DesklineError.storage("stored data is damaged; the operator has been told in the server log")
            }
        }
    }

    func withTenantLock<T>(_ tenant: TenantID, _ body: () throws -> T) throws -> T {
        try tenantLocks.lock(tenant).mutex.withLock { _ in try body() }
    }

    private func nextTicketCounter(_ key: WritableKeyPath<TicketCounters, Int>, in tenant: TenantID) throws -> Int {
        let path = ticketsDir(tenant) + "/counters.json"
        var counters = try load(TicketCounters.self, path) ?? TicketCounters()
        counters[keyPath: key] += 1
        try save(counters, path)
        return counters[keyPath: key]
    }

    // MARK: Store

    public func updateCustomer(_ id: CustomerID, in tenant: TenantID,
                               _ change: @escaping @Sendable (inout Customer, inout User?) throws(DesklineError) -> Void) async throws(DesklineError) -> Customer {
        try await io {
            try FileLock.with(self.accountsLock) {
                guard var customer = try self.load(Customer.self, self.customerFile(id, tenant)) else {
                    throw DesklineError.notFound("no customer \(id) in tenant \(tenant)")
                }
                let userBefore = try customer.userId.flatMap { try self.load(User.self, self.userFile($0, tenant)) }
                var user = userBefore
                let customerBefore = customer
                try change(&customer, &user)
                if customer != customerBefore { try self.save(customer, self.customerFile(id, tenant)) }
                if let user, user != userBefore { try self.save(user, self.userFile(user.id, tenant)) }
                return customer
            }
        }
    }

    public func createTicket(customer: CustomerID, subject: String, in tenant: TenantID, at time: Date) async throws(DesklineError) -> Ticket {
        let time = Self.storedPrecision(time)
        return try await io {
            try self.withTenantLock(tenant) {
                try self.requireTenant(tenant)
                try DurableFile.makeDirectories(self.ticketsDir(tenant))
                try DurableFile.makeDirectories(self.tenantDir(tenant) + "/customer-tickets")
                let id = TicketID(try self.nextTicketCounter(\.ticket, in: tenant))
                let ticket = Ticket(id: id, tenantId: tenant, customerId: customer, subject: subject, status: .open,
                                    createdAt: time, updatedAt: time)
                try self.save(ticket, self.ticketFile(id, tenant))
                try self.appendLine(TicketRef(ticket: id), self.customerTicketsFile(customer, tenant))
                return ticket
            }
        }
    }

    public func tickets(in tenant: TenantID) async throws(DesklineError) -> [Ticket] {
        try await io {
            try DurableFile.list(self.ticketsDir(tenant)).compactMap { name -> Ticket? in
                guard name.hasSuffix(".json"), let n = Int(name.dropLast(5)) else { return nil }
                return try self.load(Ticket.self, self.ticketFile(TicketID(n), tenant))
            }
        }
    }

    public func ticketIDs(ofCustomer customer: CustomerID, in tenant: TenantID) async throws(DesklineError) -> [TicketID] {
        try await io { try self.readLines(TicketRef.self, self.customerTicketsFile(customer, tenant)).map(\.ticket) }
    }

    public func ticket(_ id: TicketID, in tenant: TenantID) async throws(DesklineError) -> Ticket? {
        try await io { try self.load(Ticket.self, self.ticketFile(id, tenant)) }
    }

    public func tickets(ofCustomer customer: CustomerID, in tenant: TenantID) async throws(DesklineError) -> [Ticket] {
        try await io {
            try self.readLines(TicketRef.self, self.customerTicketsFile(customer, tenant)).compactMap { ref in
                try self.load(Ticket.self, self.ticketFile(ref.ticket, tenant))
            }
        }
    }

    public func updateTicket(_ id: TicketID, in tenant: TenantID, appending draft: TicketEntryDraft?, at time: Date,
                             _ change: @escaping @Sendable (inout Ticket) throws(DesklineError) -> Void) async throws(DesklineError) -> (Ticket, TicketEntry?)? {
        let time = Self.storedPrecision(time)
        return try await io { () throws -> (Ticket, TicketEntry?)? in
            try self.withTenantLock(tenant) { () throws -> (Ticket, TicketEntry?)? in
                guard var ticket = try self.load(Ticket.self, self.ticketFile(id, tenant)) else { return nil }
                let before = ticket
                try change(&ticket)
                var entry: TicketEntry?
                if let draft {
                    var note: Int?
                    if draft.kind == .note {
                        // Notes neither take a customer-visible number nor change `updatedAt`,
                        // which customers see.
                        ticket.noteCount = (ticket.noteCount ?? 0) + 1
                        note = ticket.noteCount
                    } else {
                        ticket.lastSeq += 1
                        ticket.updatedAt = time
                    }
                    entry = TicketEntry(seq: ticket.lastSeq, note: note, kind: draft.kind, authorId: draft.authorId,
                                        authorName: draft.authorName, authorRole: draft.authorRole,
                                        text: draft.text, at: time)
                }
                // The ticket first, then its log entry: after a crash in between, a sequence
                // number is skipped (harmless) but never handed out twice. If the append fails,
                // the ticket is put back, so a refused write changes nothing.
                if ticket != before { try self.save(ticket, self.ticketFile(id, tenant)) }
                if let entry {
                    do {
                        try self.appendLine(entry, self.ticketLog(id, tenant))
                    } catch {
                        if ticket != before { try? self.save(before, self.ticketFile(id, tenant)) }
                        throw error
                    }
                }
                return (ticket, entry)
            }
        }
    }

    public func entries(of ticket: TicketID, in tenant: TenantID, after: EntryPosition?, before: EntryPosition?, limit: Int,
                        includeNotes: Bool) async throws(DesklineError) -> [TicketEntry] {
        try await io {
            // Note 5.n sits after entry 5: "after 5" includes it, "before 6" too.
            let all = try self.readLines(TicketEntry.self, self.ticketLog(ticket, tenant)).filter { entry in
                (includeNotes || entry.isVisibleToCustomer)
                    && after.map { entry.position > $0 } ?? true
                    && before.map { entry.position < $0 } ?? true
            }
            return after == nil ? Array(all.suffix(limit)) : Array(all.prefix(limit))
        }
    }

    public func createCall(customer: CustomerID, ticket: TicketID?, phone: String, note: String?,
                           in tenant: TenantID, at time: Date) async throws(DesklineError) -> CallRequest {
        let time = Self.storedPrecision(time)
        return try await io {
            try self.withTenantLock(tenant) {
                try self.requireTenant(tenant)
                try DurableFile.makeDirectories(self.ticketsDir(tenant))
                try DurableFile.makeDirectories(self.tenantDir(tenant) + "/calls")
                try DurableFile.makeDirectories(self.tenantDir(tenant) + "/customer-calls")
                let id = CallID(try self.nextTicketCounter(\.call, in: tenant))
                let call = CallRequest(id: id, tenantId: tenant, customerId: customer, ticketId: ticket, phone: phone,
                                       note: note, status: .requested, createdAt: time, updatedAt: time)
                try self.save(call, self.callFile(id, tenant))
                try self.appendLine(CallRef(call: id), self.customerCallsFile(customer, tenant))
                return call
            }
        }
    }

    public func calls(ofCustomer customer: CustomerID, in tenant: TenantID) async throws(DesklineError) -> [CallRequest] {
        try await io {
            try self.readLines(CallRef.self, self.customerCallsFile(customer, tenant)).compactMap { ref in
                try self.load(CallRequest.self, self.callFile(ref.call, tenant))
            }
        }
    }
}

extension FileStore {
    public func calls(in tenant: TenantID) async throws(DesklineError) -> [CallRequest] {
        try await io {
            try DurableFile.list(self.tenantDir(tenant) + "/calls").compactMap { name -> CallRequest? in
                guard name.hasSuffix(".json"), let n = Int(name.dropLast(5)) else { return nil }
                return try self.load(CallRequest.self, self.tenantDir(tenant) + "/calls/\(n).json")
            }
        }
    }

    public func updateCall(_ id: CallID, in tenant: TenantID, at time: Date,
                           _ change: @escaping @Sendable (inout CallRequest) throws(DesklineError) -> Void) async throws(DesklineError) -> CallRequest? {
        let time = Self.storedPrecision(time)
        return try await io { () throws -> CallRequest? in
            try self.withTenantLock(tenant) { () throws -> CallRequest? in
                let path = self.tenantDir(tenant) + "/calls/\(id.number).json"
                guard var call = try self.load(CallRequest.self, path) else { return nil }
                try change(&call)
                call.updatedAt = time
                try self.save(call, path)
                return call
            }
        }
    }
}
