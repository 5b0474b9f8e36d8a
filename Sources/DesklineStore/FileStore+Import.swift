import DesklineCore
import Foundation

// `deskline export` and `deskline import` on the file store: the reads the generic export needs
// beyond the port's usual ones, and a whole tenant written as a directory.
//
// An import writes the tenant's directory in full under `<root>/.import-<tenant>` (every file
// fsynced) and puts it in place with one rename (one exchange of the two directories with
// `--replace`, `renameat2(RENAME_EXCHANGE)`): the tenant is the old one or the new one, never
// neither. The `logins/` index is made to name the new users first (an account change that
// keeps the old lines too) and the old lines go after the rename: a crash in between leaves lines
// that name a user whose email is another, which a LOGIN never follows (AccountService checks
// the stored email) and `deskline check --repair` removes. An import that fails before the rename
// changes nothing (its staging directory is removed; one a crash left behind is removed by the
// next import of the tenant, and `deskline check` reports it).

extension FileStore {
    public func customers(in tenant: TenantID) async throws(DesklineError) -> [Customer] {
        try await io {
            let dir = self.tenantDir(tenant) + "/customers"
            return try DurableFile.list(dir).compactMap { name -> Customer? in
                guard name.hasSuffix(".json"), let id = CustomerID(rawValue: String(name.dropLast(5))) else { return nil }
                return try self.load(Customer.self, self.customerFile(id, tenant))
            }.sorted { ($0.id.number ?? 0, $0.id.rawValue) < ($1.id.number ?? 0, $1.id.rawValue) }
        }
    }

    public func accountNumbers(in tenant: TenantID) async throws(DesklineError) -> AccountNumbers {
        try await io {
            try self.requireTenant(tenant)
            let counters = try self.load(Counters.self, self.countersFile(tenant)) ?? Counters()
            return AccountNumbers(lastCustomer: counters.customer, lastUser: counters.user)
        }
    }

    public func importTenant(_ dump: TenantDump, replacing: Bool) async throws(DesklineError) {
        try dump.validate()
        try await io {
            try self.changeAccounts { transaction in
                let id = dump.tenant.id
                let final = self.tenantDir(id)
                let exists = try self.load(Tenant.self, self.tenantFile(id)) != nil
                if exists && !replacing {
                    throw DesklineError.conflict("tenant \(id) already exists (import --replace replaces it)")
                }
                let staging = self.root + "/.import-" + id.rawValue
                try Self.removeTree(staging)
                // The login index as it is, with the new users' lines added, and as it will be.
                var before: [String: [AccountRef]] = [:]
                for name in try DurableFile.list(self.root + "/logins") where name.hasSuffix(".json") {
                    let path = self.root + "/logins/" + name
                    let refs = try self.load([AccountRef].self, path) ?? []
                    if refs.contains(where: { $0.tenantId == id }) { before[path] = refs }
                }
                for user in dump.users where before[self.loginFile(user.email)] == nil {
                    before[self.loginFile(user.email)] = try self.load([AccountRef].self, self.loginFile(user.email)) ?? []
                }
                var both = before, after = before.mapValues { $0.filter { $0.tenantId != id } }
                for user in dump.users {
                    let ref = AccountRef(tenantId: id, userId: user.id)
                    let path = self.loginFile(user.email)
                    if both[path]?.contains(ref) != true { both[path, default: []].append(ref) }
                    after[path, default: []].append(ref)
                }
                func commit(_ files: [String: [AccountRef]]) throws {
                    // (An email nobody has any more loses its file.)
                    try transaction.commit(try files.sorted { $0.key < $1.key }.map {
                        $0.value.isEmpty ? AccountTransaction.Write(path: $0.key, data: nil) : try self.write($0.value, $0.key)
                    }, creating: [self.root + "/logins"])
                }
                do {
                    try self.writeTenant(dump, into: staging)
                    try commit(both)
                    try DurableFile.makeDirectories(self.root + "/tenants")
                    try Self.swap(staging, final, exchange: DurableFile.isDirectory(final))
                    try DurableFile.syncDirectory(self.root + "/tenants")
                    try DurableFile.syncDirectory(self.root)
                } catch {
                    try? Self.removeTree(staging)
                    throw error
                }
                self.allUsersChanged()
                // The tenant is in place (and its old directory, if any, is now the staging one).
                try? Self.removeTree(staging)
                do {
                    try commit(after)
                } catch {
                    self.logger.warning("the login index still names the replaced users (harmless; deskline check --repair removes them)",
                                        metadata: ["tenant": "\(id)", "error": "\(error)"])
                }
            }
        }
    }

    /// Puts `staging` at `final`: a rename, or with `exchange` one atomic swap of the two (the old
    /// directory is then at `staging`). Where the swap is not available (not Linux, or a file
    /// system without it), two renames, with a moment in between where neither is at `final`.
    static func swap(_ staging: String, _ final: String, exchange: Bool) throws {
        if exchange {
            if let renameat2 = Self.renameat2, renameat2(AT_FDCWD, staging, AT_FDCWD, final, 2 /* RENAME_EXCHANGE */) == 0 { return }
            let aside = staging + ".old"
            try removeTree(aside)
            guard rename(final, aside) == 0 else { throw DurableFile.IOError(operation: "rename", path: final, errno: errno) }
            guard rename(staging, final) == 0 else {
                let e = errno
                _ = rename(aside, final)
                throw DurableFile.IOError(operation: "rename", path: staging, errno: e)
            }
            guard rename(aside, staging) == 0 else { throw DurableFile.IOError(operation: "rename", path: aside, errno: errno) }
            return
        }
        guard rename(staging, final) == 0 else { throw DurableFile.IOError(operation: "rename", path: staging, errno: errno) }
    }

    /// glibc's `renameat2` (not in Swift's Glibc module), looked up once.
    private static let renameat2: (@convention(c) (Int32, UnsafePointer<CChar>, Int32, UnsafePointer<CChar>, UInt32) -> Int32)? = {
        guard let symbol = dlsym(nil, "renameat2") else { return nil }
        return unsafeBitCast(symbol, to: (@convention(c) (Int32, UnsafePointer<CChar>, Int32, UnsafePointer<CChar>, UInt32) -> Int32).self)
    }()

    /// Writes every file of a tenant's directory at `dir` (which must not exist), each fsynced,
    /// as the store's own writes would have left them: one ticket log line per entry (its state
    /// counted up to that entry), then a line with the ticket as it is if that differs.
    private func writeTenant(_ dump: TenantDump, into dir: String) throws {
        let id = dump.tenant.id
        // The store's path for a file, moved under `dir`.
        let base = tenantDir(id)
        func staged(_ path: String) -> String { dir + path.dropFirst(base.count) }
        var directories: Set<String> = []
        func put(_ data: Data, _ path: String) throws {
            let target = staged(path)
            let parent = (target as NSString).deletingLastPathComponent
            if directories.insert(parent).inserted { try DurableFile.makeDirectories(parent) }
            let fd = open(target, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw DurableFile.IOError(operation: "create", path: target, errno: errno) }
            defer { close(fd) }
            try DurableFile.writeAll(fd, data, path: target)
            guard fsync(fd) == 0 else { throw DurableFile.IOError(operation: "fsync", path: target, errno: errno) }
        }
        for sub in ["/users", "/customers", "/customer-emails"] {
            try DurableFile.makeDirectories(dir + sub)
            directories.insert(dir + sub)
        }
        var stored = dump.tenant
        stored.createdAt = Timestamp.truncate(stored.createdAt)
        try put(try Self.document(Counters(customer: dump.numbers.lastCustomer, user: dump.numbers.lastUser)), countersFile(id))
        for customer in dump.customers {
            try put(try Self.document(customer), customerFile(customer.id, id))
            try put(try Self.document(CustomerEmail(customerId: customer.id)), customerEmailFile(customer.email, id))
        }
        for user in dump.users { try put(try Self.document(user), userFile(user.id, id)) }
        var customerTickets: [CustomerID: Data] = [:]
        for log in dump.tickets {
            var lines = Data()
            var state = log.ticket
            state.lastSeq = 0
            state.noteCount = log.ticket.noteCount.map { _ in 0 }
            lines.append(JSONLine.line(TicketLogLine(ticket: state, entry: nil)))
            for entry in log.entries {
                if let note = entry.note { state.noteCount = note } else { state.lastSeq = entry.seq }
                lines.append(JSONLine.line(TicketLogLine(ticket: state, entry: entry)))
            }
            if state != log.ticket { lines.append(JSONLine.line(TicketLogLine(ticket: log.ticket, entry: nil))) }
            try put(lines, ticketLog(log.ticket.id, id))
            customerTickets[log.ticket.customerId, default: Data()].append(try Self.line(TicketRef(ticket: log.ticket.id)))
        }
        for (customer, lines) in customerTickets { try put(lines, customerTicketsFile(customer, id)) }
        var customerCalls: [CustomerID: Data] = [:]
        for call in dump.calls {
            try put(try Self.line(call), callLog(call.id, id))
            customerCalls[call.customerId, default: Data()].append(try Self.line(CallRef(call: call.id)))
        }
        for (customer, lines) in customerCalls { try put(lines, customerCallsFile(customer, id)) }
        for log in dump.inboxes {
            try put(log.inbox.items.reduce(into: Data()) { $0.append(JSONLine.line($1)) }, inboxLog(log.user, id))
            if log.inbox.readUpTo > 0 || !log.inbox.readIds.isEmpty {
                try put(try Self.line(InboxReadState(readUpTo: log.inbox.readUpTo, readIds: log.inbox.readIds.sorted())),
                        inboxReadLog(log.user, id))
            }
        }
        var segments: [Int: Data] = [:]
        for event in dump.events {
            let seq = event.seq ?? 0
            segments[eventLogRetention.segment(of: seq), default: Data()].append(try JSONLine.line(event))
        }
        for (first, lines) in segments { try put(lines, eventLog(id, holding: first)) }
        // tenant.json last (as a create does): the directory is complete once it is there.
        try put(try Self.document(stored), tenantFile(id))
        for directory in directories.sorted(by: >) { try DurableFile.syncDirectory(directory) }
        try DurableFile.syncDirectory(dir)
    }

    /// Removes a directory tree, if there (staging and replaced directories only).
    static func removeTree(_ path: String) throws {
        guard FileManager.default.fileExists(atPath: path) else { return }
        do {
            try FileManager.default.removeItem(atPath: path)
        } catch {
            throw DurableFile.IOError(operation: "remove", path: path, errno: EIO)
        }
    }
}
