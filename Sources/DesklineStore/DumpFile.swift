import Crypto
import DesklineCore
import Foundation

/// The portable dump `deskline export` writes and `deskline import` reads (docs/STORAGE.md,
/// "Moving data"): JSON lines, the same for either backend, versioned by its first line.
///
/// ```
/// {"exportedAt":"…","format":"deskline-export","version":1}
/// {"lastCustomer":3,"lastUser":5,"tenant":{…}}          then the tenant's records:
/// {"customer":{…}}  {"user":{…}}  {"ticket":{…}}  {"entry":{…},"ticketNumber":1001}
/// {"call":{…}}  {"inbox":"u2","lastId":7,"readIds":[5],"readUpTo":3}
/// {"inbox":"u2","notification":{…}}  {"event":{…}}
/// {"end":"acme","records":123,"sha256":"…"}             the tenant is complete
/// {"complete":true,"tenants":2}                         the file is complete
/// ```
///
/// Records are Core's `Codable` types as the stores keep them (times as ISO 8601 with
/// milliseconds). `sha256` is the digest of the tenant's lines from its `tenant` line to its last
/// record (newlines included). A tenant without its `end` line, whose count or digest differs, or
/// a file without its last line, is refused: a cut or damaged file is never imported.
public enum DumpFile {
    public static let format = "deskline-export"
    /// The version this build writes; it reads this one only.
    public static let version = 1

    struct Line: Codable {
        var format: String?
        var version: Int?
        var exportedAt: Date?
        var tenant: Tenant?
        var lastCustomer: Int?
        var lastUser: Int?
        var customer: Customer?
        var user: User?
        var ticket: Ticket?
        var entry: TicketEntry?
        var ticketNumber: Int?
        var call: CallRequest?
        var inbox: UserID?
        var lastId: Int?
        var readUpTo: Int?
        var readIds: [Int]?
        var notification: DesklineCore.Notification?
        var event: TicketEvent?
        var end: TenantID?
        var records: Int?
        var sha256: String?
        var complete: Bool?
        var tenants: Int?
    }

    static let encoder = JSONEncoder.desklineRecords()
    static let decoder = JSONDecoder.desklineRecords()

    static func encode(_ line: Line) throws -> Data {
        var data = try encoder.encode(line)
        data.append(0x0A)
        return data
    }

    /// The file's first line.
    public static func header(exportedAt: Date) throws -> Data {
        try encode(Line(format: format, version: version, exportedAt: exportedAt))
    }

    /// The file's last line, after `tenants` tenants.
    public static func trailer(tenants: Int) throws -> Data {
        try encode(Line(complete: true, tenants: tenants))
    }

    static func hex(_ digest: SHA256.Digest) -> String { digest.map { String(format: "%02x", $0) }.joined() }

    /// A tenant's lines, one record at a time, ending with its `end` line.
    public static func write(_ dump: TenantDump, _ out: (Data) throws -> Void) throws {
        var records = 0
        var hash = SHA256()
        func put(_ line: Line) throws {
            let data = try encode(line)
            hash.update(data: data)
            try out(data)
            records += 1
        }
        try put(Line(tenant: dump.tenant, lastCustomer: dump.numbers.lastCustomer, lastUser: dump.numbers.lastUser))
        for customer in dump.customers { try put(Line(customer: customer)) }
        for user in dump.users { try put(Line(user: user)) }
        for log in dump.tickets {
            try put(Line(ticket: log.ticket))
            for entry in log.entries { try put(Line(entry: entry, ticketNumber: log.ticket.id.number)) }
        }
        for call in dump.calls { try put(Line(call: call)) }
        for log in dump.inboxes {
            try put(Line(inbox: log.user, lastId: log.inbox.lastId, readUpTo: log.inbox.readUpTo, readIds: log.inbox.readIds.sorted()))
            for item in log.inbox.items { try put(Line(inbox: log.user, notification: item)) }
        }
        for event in dump.events { try put(Line(event: event)) }
        try out(try encode(Line(end: dump.tenant.id, records: records, sha256: hex(hash.finalize()))))
    }

    /// Reads a dump's lines in order and hands on each tenant once its `end` line came.
    public struct Reader {
        private var sawHeader = false
        private var sawTrailer = false
        private var tenantsRead = 0
        private var hash = SHA256()
        private var current: TenantDump?
        private var records = 0
        private var ticketIndex: [Int: Int] = [:]
        private var inboxIndex: [UserID: Int] = [:]
        private var lineNumber = 0

        public init() {}

        /// Takes one line (without its newline); returns a tenant when this line completed one.
        public mutating func take(_ text: Data) throws(DesklineError) -> TenantDump? {
            lineNumber += 1
            func bad(_ what: String) -> DesklineError { .invalidArgument("line \(lineNumber): \(what)") }
            if text.isEmpty { return nil }
            guard !sawTrailer else { throw bad("a line after the file's last line") }
            let line: Line
            do {
                line = try DumpFile.decoder.decode(Line.self, from: text)
            } catch {
                throw bad("not a dump record (\(error))")
            }
            guard sawHeader else {
                guard line.format == DumpFile.format else { throw bad("not a Deskline export (no \"format\":\"\(DumpFile.format)\" line first)") }
                guard line.version == DumpFile.version else {
                    throw bad("a dump of version \(line.version.map(String.init) ?? "?"); this build reads version \(DumpFile.version)")
                }
                sawHeader = true
                return nil
            }
            if line.complete == true {
                guard current == nil else { throw bad("the file ends inside tenant \(current!.tenant.id)") }
                guard line.tenants == tenantsRead else {
                    throw bad("the file announces \(line.tenants ?? 0) tenants but holds \(tenantsRead): it is damaged")
                }
                sawTrailer = true
                return nil
            }
            if let end = line.end {
                guard let dump = current, end == dump.tenant.id, line.records == records,
                      line.sha256 == DumpFile.hex(hash.finalize()) else {
                    throw bad("tenant \(current?.tenant.id.rawValue ?? end.rawValue) does not end as announced (\(line.records ?? 0) records, \(records) read, or another digest): the file is cut or damaged")
                }
                current = nil
                tenantsRead += 1
                return dump
            }
            // (A tenant's digest begins with its own line.)
            if line.tenant != nil { hash = SHA256() }
            hash.update(data: text)
            hash.update(data: Data([0x0A]))
            if let tenant = line.tenant {
                guard current == nil else { throw bad("tenant \(tenant.id) begins before \(current!.tenant.id) ended") }
                current = TenantDump(tenant: tenant, numbers: AccountNumbers(lastCustomer: line.lastCustomer ?? 0, lastUser: line.lastUser ?? 0))
                (records, ticketIndex, inboxIndex) = (1, [:], [:])
                return nil
            }
            guard current != nil else { throw bad("a record outside any tenant") }
            // Taken out while it grows, so that appending does not copy it.
            var dump = current!
            current = nil
            records += 1
            if let customer = line.customer {
                dump.customers.append(customer)
            } else if let user = line.user {
                dump.users.append(user)
            } else if let ticket = line.ticket {
                ticketIndex[ticket.id.number] = dump.tickets.count
                dump.tickets.append(TenantDump.TicketLog(ticket: ticket, entries: []))
            } else if let entry = line.entry {
                guard let number = line.ticketNumber, let i = ticketIndex[number] else { throw bad("an entry of a ticket not listed before it") }
                dump.tickets[i].entries.append(entry)
            } else if let call = line.call {
                dump.calls.append(call)
            } else if let user = line.inbox, let item = line.notification {
                guard let i = inboxIndex[user] else { throw bad("a notification of an inbox not listed before it") }
                dump.inboxes[i].inbox.items.append(item)
            } else if let user = line.inbox {
                inboxIndex[user] = dump.inboxes.count
                dump.inboxes.append(TenantDump.InboxLog(user: user, inbox: Inbox(items: [], readUpTo: line.readUpTo ?? 0,
                                                                                  readIds: Set(line.readIds ?? []), lastId: line.lastId ?? 0)))
            } else if let event = line.event {
                dump.events.append(event)
            } else {
                throw bad("a record of no known kind")
            }
            current = dump
            return nil
        }

        /// After the last line: refuses a file that stopped inside a tenant (or had no header).
        public func finish() throws(DesklineError) {
            guard sawHeader else { throw .invalidArgument("the file is empty: not a Deskline export") }
            if let current { throw .invalidArgument("tenant \(current.tenant.id) has no end line: the file is cut") }
            guard sawTrailer else { throw .invalidArgument("the file has no last line (\"complete\"): it is cut") }
        }
    }
}
