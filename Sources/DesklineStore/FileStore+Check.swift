import DesklineCore
import Foundation

/// What `deskline check` found, and what `--repair` fixed.
public struct CheckReport: Sendable {
    /// Problems still there (after repair, those it cannot fix).
    public var problems: [String] = []
    /// What was fixed (with `--repair`).
    public var repaired: [String] = []
    /// How many of each kind of record were looked at.
    public var counts: [String: Int] = [:]

    public var isClean: Bool { problems.isEmpty }
}

extension FileStore {
    /// Verifies every tenant directory: each file parses, ids match their file names and are
    /// unique, the user↔customer links and the login, customer-email, customer-ticket and
    /// customer-call indexes agree with the records, logs have no torn last line, entries are in
    /// order and never beyond their ticket's count, inbox ids run 1, 2, 3, ...
    ///
    /// With `repair`, fixes what can be derived again: cuts torn log tails, removes leftover temp
    /// files and logs whose first write never finished, rebuilds the indexes from the records.
    /// Repair must run with no server on the data directory (the caller holds the server lock).
    /// `live`: a server is running on the directory (its journals are then in use, not leftovers).
    public func check(repair: Bool, live: Bool = false) async throws(DesklineError) -> CheckReport {
        try await io { () throws -> CheckReport in
            try FileLock.with(self.accountsLock) {
                // Repairs may remove or change users: nothing kept from before them is used.
                defer { if repair { self.allUsersChanged() } }
                return try self.checkAll(repair: repair, live: live)
            }
        }
    }

    private func checkAll(repair: Bool, live: Bool) throws -> CheckReport {
        var report = CheckReport()
        func problem(_ text: String, fix: (() throws -> Void)? = nil) {
            if repair, let fix {
                do {
                    try fix()
                    report.repaired.append(text)
                    return
                } catch {
                    report.problems.append("\(text) (repair failed: \(error))")
                    return
                }
            }
            report.problems.append(text)
        }
        func parse<T: Decodable>(_ type: T.Type, _ path: String) -> T? {
            do {
                guard let data = try DurableFile.read(path) else { return nil }
                return try Self.decoder.decode(T.self, from: data)
            } catch {
                problem("\(path): cannot be read or parsed (\(error))")
                return nil
            }
        }
        /// Complete lines of a log; a torn tail is a problem (repair: cut it).
        func lines<T: Decodable>(_ type: T.Type, _ path: String) -> [T] {
            guard let data = try? DurableFile.read(path) else { return [] }
            if !data.isEmpty, data.last != 0x0A {
                let keep = (data.lastIndex(of: 0x0A).map { $0 + 1 }) ?? 0
                problem("\(path): torn last line (\(data.count - keep) bytes of an unfinished write)") {
                    _ = try DurableFile.cutTornTail(path)
                }
            }
            var result: [T] = []
            var complete = data.split(separator: 0x0A)
            if data.last != 0x0A, !complete.isEmpty { complete.removeLast() }
            for (n, line) in complete.enumerated() {
                do {
                    result.append(try Self.decoder.decode(T.self, from: Data(line)))
                } catch {
                    problem("\(path): line \(n + 1) cannot be parsed")
                }
            }
            return result
        }
        // An interrupted account change first: the rest is checked as it is after the undo.
        let transaction = accountTransaction
        if let undone = accountChangeUndoneAtStart.withLock({ undone in defer { undone = nil }; return undone }) {
            report.repaired.append("\(AccountTransaction.intentName): an interrupted account change was undone (\(undone.files.map(\.path).joined(separator: ", ")))")
        }
        var intentPending = false
        do {
            if let intent = try transaction.pending() {
                intentPending = true
                problem("\(AccountTransaction.intentName): an interrupted account change is not undone yet (\(intent.files.map(\.path).joined(separator: ", "))); the next account change, `deskline serve` and `deskline check --repair` undo it") {
                    try transaction.undo(intent)
                    intentPending = false
                }
            }
        } catch {
            intentPending = true
            problem("\(error): a person must look at it (account changes are refused while it is there; remove it only knowing what the change was)")
        }
        /// A repair of account files that is not an account transaction (those refuse to run over a
        /// pending intent): only reported while an interrupted change is not undone, whose later
        /// undo could otherwise remove what the repair wrote.
        func accountRepair(_ fix: @escaping () throws -> Void) -> (() throws -> Void)? {
            intentPending ? nil : fix
        }
        // What an import cut short left (docs/STORAGE.md, "Moving data"): never part of the data.
        if !live {
            for name in (try? DurableFile.list(root)) ?? [] where name.hasPrefix(".import-") {
                problem("\(root)/\(name): leftover directory of an interrupted import (not part of the data)") {
                    try Self.removeTree(self.root + "/" + name)
                }
            }
        }
        func sweep(_ dir: String) {
            for name in (try? DurableFile.list(dir)) ?? [] where name.hasPrefix(DurableFile.tempPrefix) {
                problem("\(dir)/\(name): leftover temp file of an interrupted write") {
                    try DurableFile.remove(dir + "/" + name)
                }
            }
            // Old versions an account change kept belong to it while its intent is there.
            for name in (try? DurableFile.list(dir)) ?? [] where name.hasSuffix(AccountTransaction.keptSuffix) && !intentPending {
                problem("\(dir)/\(name): old version kept by an account change that was committed (a leftover)") {
                    try DurableFile.remove(dir + "/" + name)
                }
            }
        }
        func records<ID, T: Decodable>(_ dir: String, _ id: (String) -> ID?, _ type: T.Type) -> [(ID, T)] {
            sweep(dir)
            return ((try? DurableFile.list(dir)) ?? []).sorted().compactMap { name in
                guard name.hasSuffix(".json"), !name.hasSuffix(".state.json"), name != "counters.json" else { return nil }
                guard let key = id(String(name.dropLast(5))) else {
                    problem("\(dir)/\(name): not a valid record name")
                    return nil
                }
                return parse(T.self, dir + "/" + name).map { (key, $0) }
            }
        }

        sweep(root)
        sweep(root + "/logins")
        var expectedLogins: [String: Set<AccountRef>] = [:]
        for tenantName in try DurableFile.list(root + "/tenants").sorted() {
            guard let tenant = TenantID(rawValue: tenantName) else {
                problem("tenants/\(tenantName): not a valid tenant id")
                continue
            }
            let dir = tenantDir(tenant)
            sweep(dir)
            // A journal in use (by a server, or by this process) holds the latest writes; one
            // left by an unclean stop must be replayed. (--repair took the server lock, which
            // replayed it already.)
            let inUse = live || writers.withLock { $0[tenant] != nil }
            if !inUse, Journal.hasRecords(tenantDir: dir) {
                problem("\(dir)/journal: writes acknowledged before an unclean stop are not replayed into the logs yet (the next `deskline serve` or `deskline check --repair` replays them)")
            }
            guard let t = parse(Tenant.self, tenantFile(tenant)) else {
                if let leftovers = unfinishedTenant(dir) {
                    problem("\(dir): a `tenant add` that never finished (no tenant.json, no records); repair removes it",
                            fix: accountRepair { try self.removeUnfinishedTenant(dir, leftovers) })
                } else {
                    problem("\(dir): no readable tenant.json")
                }
                continue
            }
            if t.id != tenant { problem("\(tenantFile(tenant)): id \(t.id) does not match its directory") }
            report.counts["tenants", default: 0] += 1

            let users = Dictionary(records(dir + "/users", UserID.init(rawValue:), User.self), uniquingKeysWith: { a, _ in a })
            let customers = Dictionary(records(dir + "/customers", CustomerID.init(rawValue:), Customer.self), uniquingKeysWith: { a, _ in a })
            sweep(dir + "/customer-emails")
            report.counts["users", default: 0] += users.count
            report.counts["customers", default: 0] += customers.count
            for (id, user) in users where user.id != id || user.tenantId != tenant {
                problem("\(userFile(id, tenant)): id or tenant does not match its place")
            }
            for (id, customer) in customers where customer.id != id || customer.tenantId != tenant {
                problem("\(customerFile(id, tenant)): id or tenant does not match its place")
            }

            // Ticket and call logs, and the per-customer indexes.
            func logs<Line: Decodable>(_ dir: String, _ type: Line.Type) -> [(Int, [Line])] {
                sweep(dir)
                return ((try? logNumbers(in: dir)) ?? []).compactMap { n in
                    let path = dir + "/\(n).jsonl"
                    // Only a log that was read and holds no newline at all is a first write
                    // that never finished; a log that cannot be read or parsed is reported,
                    // never removed.
                    guard let data = try? DurableFile.read(path) else {
                        problem("\(path): cannot be read")
                        return nil
                    }
                    if !data.contains(0x0A) {
                        problem("\(path): no complete line (its first write never finished)") {
                            guard unlink(path) == 0 else { throw DurableFile.IOError(operation: "unlink", path: path, errno: errno) }
                        }
                        return nil
                    }
                    let content = lines(Line.self, path)
                    return content.isEmpty ? nil : (n, content)
                }
            }
            func checkIndex<Line: Codable>(_ owners: [CustomerID: [Int]], _ dir: String, what: String, _ path: (CustomerID) -> String,
                                           _ number: (Line) -> Int, _ make: (Int) -> Line) {
                let stale = (try? staleIndexes(owners.mapValues(Set.init), dir: dir, index: path,
                                               read: { lines(Line.self, $0).map(number) }, line: make)) ?? []
                for (customer, indexPath, fixed) in stale {
                    problem("\(what) index of customer \(tenant)/\(customer) does not match the \(what)s") {
                        try self.rewriteIndex(fixed, indexPath)
                    }
                }
            }
            var ticketsByCustomer: [CustomerID: [Int]] = [:]
            // Users a ticket or call names (as author, assignee or agent).
            var namedUsers = Set<UserID>()
            // Each ticket's entries, as "<ticket> <position>", for the event log's references.
            var storedEntries = Set<String>()
            for (n, log) in logs(ticketsDir(tenant), TicketLogLine.self) {
                storedEntries.insert("\(n)")
                for line in log {
                    if let entry = line.entry { storedEntries.insert("\(n) \(entry.position)") }
                    if let author = line.entry?.authorId { namedUsers.insert(author) }
                    if let assignee = line.ticket.assigneeId { namedUsers.insert(assignee) }
                }
                report.counts["tickets", default: 0] += 1
                let path = ticketLog(TicketID(n), tenant)
                let ticket = log[log.count - 1].ticket
                if log.contains(where: { $0.ticket.id.number != n || $0.ticket.tenantId != tenant || $0.ticket.customerId != ticket.customerId }) {
                    problem("\(path): a line names another ticket, tenant or customer")
                }
                if customers[ticket.customerId] == nil { problem("ticket \(tenant)/#\(n) belongs to missing customer \(ticket.customerId)") }
                ticketsByCustomer[ticket.customerId, default: []].append(n)
                let entries = log.compactMap(\.entry)
                report.counts["entries", default: 0] += entries.count
                if zip(entries, entries.dropFirst()).contains(where: { !($0.position < $1.position) }) {
                    problem("\(path): entries out of order or repeated")
                }
                // HISTORY finds a page by a binary search over the lines' places (PlaceOfLine).
                let places = log.map(\.place)
                if zip(places, places.dropFirst()).contains(where: { $1 < $0 }) {
                    problem("\(path): a line stands before an earlier one (its entry, or the counts of a line without one)")
                }
                if let last = entries.last, last.seq > ticket.lastSeq || (last.note ?? 0) > (ticket.noteCount ?? 0) {
                    problem("ticket \(tenant)/#\(n) says \(ticket.lastSeq) entries but its log has \(last.messageID)")
                }
            }
            sweep(dir + "/customer-tickets")
            checkIndex(ticketsByCustomer, dir + "/customer-tickets", what: "ticket", { customerTicketsFile($0, tenant) },
                       { (line: TicketRef) in line.ticket.number }, { TicketRef(ticket: TicketID($0)) })
            var callsByCustomer: [CustomerID: [Int]] = [:]
            for (n, log) in logs(callsDir(tenant), CallRequest.self) {
                report.counts["calls", default: 0] += 1
                let call = log[log.count - 1]
                if log.contains(where: { $0.id.number != n || $0.tenantId != tenant || $0.customerId != call.customerId }) {
                    problem("\(callLog(call.id, tenant)): a line names another call, tenant or customer")
                }
                callsByCustomer[call.customerId, default: []].append(n)
                namedUsers.formUnion(log.compactMap(\.agentId))
            }
            sweep(dir + "/customer-calls")
            checkIndex(callsByCustomer, dir + "/customer-calls", what: "call", { customerCallsFile($0, tenant) },
                       { (line: CallRef) in line.call.number }, { CallRef(call: CallID($0)) })

            let accounts = TenantAccounts(tenant: tenant, users: users, customers: customers, tickets: ticketsByCustomer,
                                          calls: callsByCustomer, namedUsers: namedUsers,
                                          inboxes: Set(((try? DurableFile.list(inboxDir(tenant))) ?? []).compactMap {
                                              $0.hasSuffix(".jsonl") ? UserID(rawValue: String($0.dropLast(6))) : nil
                                          }))
            for finding in accountFindings(accounts, transaction: transaction) { problem(finding.text, fix: finding.fix) }
            let removableUsers = accounts.removableUsers
            for user in users.values where !removableUsers.contains(user.id) {
                expectedLogins[user.email, default: []].insert(AccountRef(tenantId: tenant, userId: user.id))
            }

            // The event log: numbers without gaps, in order, each segment named by its first.
            sweep(eventsDir(tenant))
            var nextEvent: Int?
            for segment in (try? eventSegments(tenant)) ?? [] {
                let path = eventsDir(tenant) + "/\(segment).jsonl"
                // One reading of the segment: each line's number and, if stored as a reference,
                // where its ticket and entry are.
                let heads = lines(StoredEventRef.self, path)
                let seqs = heads.map(\.seq)
                report.counts["events", default: 0] += seqs.count
                // An event stored as a reference names a ticket log line that is there.
                let missing = heads.compactMap { head -> Int? in
                    guard let ref = head.stored else { return nil }
                    let key = ref.seq.map { "\(ref.ticket) \(EntryPosition($0, note: ref.note ?? 0))" } ?? "\(ref.ticket)"
                    return storedEntries.contains(key) ? nil : head.seq
                }
                if let first = missing.first {
                    problem("\(path): \(missing.count) event(s) name a ticket log line that is not there (the first: event \(first))")
                }
                if let next = nextEvent, segment != next {
                    problem("\(path): the event log jumps from event \(next - 1) to \(segment)")
                }
                // The oldest segment kept may begin after its first number: a log moved from a
                // store that prunes by time (docs/STORAGE.md, "Moving data") starts where it was
                // cut.
                let start = nextEvent == nil ? max(segment, seqs.first ?? segment) : segment
                if segment != eventLogRetention.segment(of: segment) || start - segment + seqs.count > eventLogRetention.eventsPerSegment
                    || seqs != (0..<seqs.count).map({ start + $0 }) {
                    problem("\(path): event numbers are not \(start), \(start + 1), ... in order")
                }
                nextEvent = start + seqs.count
            }

            // Inboxes: ids 1, 2, 3, ... in order; read marks never beyond them.
            sweep(inboxDir(tenant))
            for name in ((try? DurableFile.list(inboxDir(tenant))) ?? []).sorted() where name.hasSuffix(".jsonl") && !name.hasSuffix(".read.jsonl") {
                guard let user = UserID(rawValue: String(name.dropLast(6))) else {
                    problem("\(inboxDir(tenant))/\(name): not a valid inbox name")
                    continue
                }
                if users[user] == nil { problem("inbox of \(tenant)/\(user) belongs to a missing user") }
                let items = lines(DesklineCore.Notification.self, inboxLog(user, tenant))
                report.counts["notifications", default: 0] += items.count
                if items.map(\.id) != (0..<items.count).map({ $0 + 1 }) {
                    problem("inbox of \(tenant)/\(user): ids are not 1, 2, 3, ... in order")
                }
                if let read = lines(InboxReadState.self, inboxReadLog(user, tenant)).last,
                   read.readUpTo > items.count || (read.readIds.max() ?? 0) > items.count {
                    problem("inbox of \(tenant)/\(user) marks notifications read that it does not hold")
                }
            }
        }

        // The login index: exactly one entry per user, under the user's email.
        var seenFiles = Set<String>()
        for (email, refs) in expectedLogins {
            let path = loginFile(email)
            seenFiles.insert((path as NSString).lastPathComponent)
            let stored = Set((try? load([AccountRef].self, path)) ?? [])
            if stored != refs {
                problem("login index for \(email) does not match the users", fix: accountRepair {
                    try self.save(refs.sorted { ($0.tenantId.rawValue, $0.userId.rawValue) < ($1.tenantId.rawValue, $1.userId.rawValue) }, path)
                })
            }
        }
        for name in ((try? DurableFile.list(root + "/logins")) ?? []) where !seenFiles.contains(name) && name.hasSuffix(".json") {
            problem("logins/\(name): index entry for an email no user has", fix: accountRepair {
                guard unlink(self.root + "/logins/" + name) == 0 else { throw DurableFile.IOError(operation: "unlink", path: name, errno: errno) }
            })
        }
        report.counts["logins", default: 0] += expectedLogins.values.reduce(0) { $0 + $1.count }
        return report
    }

    /// What a `tenant add` from before account changes were all or nothing can have left when it
    /// failed before `tenant.json` (written last): the tenant's empty record directories and its
    /// counters. Nil if `dir` holds anything else, or `tenant.json` is there (then it is damaged).
    func unfinishedTenant(_ dir: String) -> [String]? {
        let made = ["users", "customers", "customer-emails", "counters.json"]
        guard access(dir + "/tenant.json", F_OK) != 0, let names = try? DurableFile.list(dir),
              names.allSatisfy({ made.contains($0) || $0.hasPrefix(DurableFile.tempPrefix) }) else { return nil }
        let empty = names.filter { $0 != "counters.json" && !$0.hasPrefix(DurableFile.tempPrefix) }
            .allSatisfy { ((try? DurableFile.list(dir + "/" + $0)) ?? ["?"]).isEmpty }
        return empty ? names : nil
    }

    func removeUnfinishedTenant(_ dir: String, _ names: [String]) throws {
        for name in names {
            if DurableFile.isDirectory(dir + "/" + name) {
                guard rmdir(dir + "/" + name) == 0 else { throw DurableFile.IOError(operation: "rmdir", path: dir + "/" + name, errno: errno) }
            } else {
                try DurableFile.remove(dir + "/" + name)
            }
        }
        guard rmdir(dir) == 0 else { throw DurableFile.IOError(operation: "rmdir", path: dir, errno: errno) }
        try DurableFile.syncDirectory((dir as NSString).deletingLastPathComponent)
    }

    /// Replaces a JSON-lines index atomically with exactly `items`.
    func rewriteIndex<T: Encodable>(_ items: [T], _ path: String) throws {
        var data = Data()
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        for item in items {
            data.append(try encoder.encode(item))
            data.append(0x0A)
        }
        try DurableFile.makeDirectories((path as NSString).deletingLastPathComponent)
        try DurableFile.replace(path, with: data)
    }
}
