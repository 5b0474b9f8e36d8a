import Crypto
import DesklineCore
import Foundation
import Logging
import NIOPosix
import Synchronization

/// The embedded, file-backed ``Store``: one directory per tenant; accounts are small JSON
/// documents replaced atomically, tickets, calls and inboxes append-only logs whose last line is
/// the current state. Layout and reasoning: docs/STORAGE.md.
///
/// All file I/O runs on a thread pool, never on the caller's thread. Account writes hold the
/// data directory's `accounts.lock` (`flock`), which the admin CLI takes too, so a CLI write
/// while a server runs is neither lost nor interleaved. Account records are read from their files
/// every time (the tenant's user list is kept only while its directory is unchanged, see
/// `users(in:)`), so a login created by the CLI is visible to a running server at once. Ticket,
/// call and inbox writes go through one ``TenantWriter`` per tenant, which group-commits them.
public final class FileStore: Store {
    /// The data directory.
    public let root: String
    let threadPool: NIOThreadPool
    let logger: Logger
    /// How far apart a busy tenant's writer starts its batches (see ``TenantWriter``).
    let groupCommitInterval: Duration
    /// How long an idle tenant writer keeps its logs open (see ``TenantWriter/idleLogsKept``).
    let idleLogsKept: Duration
    let visibility = LogVisibility()
    let writers = Mutex<[TenantID: TenantWriter]>([:])
    /// Each tenant's users as last read, with the users directory's mtime (see `users(in:)`).
    let userCache = Mutex<[TenantID: UserCache.Entry]>([:])
    /// The readings of users directories under way (see `loadUsers(_:)`).
    let userLoads = Mutex(UserCache.Loads())
    /// The most logs all tenants' writers together keep open between their batches (see
    /// ``OpenLogFiles``), one tenant at most 256 of them: open files to budget beside connections.
    public static let logsKeptOpen = 1024
    let openLogBudget = OpenLogBudget(limit: FileStore.logsKeptOpen)
    /// How often a users directory was read in full (for tests: the cache's misses).
    let userListReads = Atomic<Int>(0)
    /// Counts this process's changes to users (changed under the `userCache` lock): a reading
    /// that began before a change is not kept.
    let usersGeneration = Atomic<Int>(0)
    /// Customers' ticket numbers as last read (see `ticketIDs(ofCustomer:in:)`).
    let ticketIndexCache = Mutex(TicketIndexCache())
    /// Failures tests inject into write batches and account changes.
    let faults = FaultInjection()
    /// The interrupted account change ``lockForServer(pid:)`` undid, if any (for `check --repair`'s report).
    let accountChangeUndoneAtStart = Mutex<AccountTransaction.Intent?>(nil)
    /// Committed events, to every follower (``followCommittedEvents(_:)``).
    let eventFeed = EventBroadcast()
    /// How much of each tenant's event log is kept.
    let eventLogRetention: EventLogRetention
    /// Bytes HISTORY pages read from ticket logs (for tests: what a page costs).
    let historyBytesRead = Atomic<Int>(0)
    /// Set when the server took over a data directory whose last server did not stop cleanly:
    /// each tenant's files are then checked before its first write (see ``recoverTenant(_:)``).
    private let needsRecovery = Atomic<Bool>(false)
    /// Set when a recovery had to leave something damaged: the server then does not record a
    /// clean stop, so the next start recovers again.
    let recoveryFailed = Atomic<Bool>(false)
    public var recoveryNeeded: Bool { needsRecovery.load(ordering: .relaxed) }

    /// Opens a data directory; creates it if `create` is set, else refuses one that is not there
    /// (so a mistyped `--data` does not silently start an empty store).
    ///
    /// `groupCommitInterval`: while a tenant's writer has writes waiting, it starts a batch no
    /// sooner than this after the previous one started (or once 64 writes wait), so that more
    /// writes share one fsync; an idle writer starts at once. Zero (the default here, for tools
    /// and tests; `serve` passes config.json's): as soon as the previous batch is durable.
    /// `eventLog`: how much of each tenant's event log is kept (tests choose small segments).
    /// `idleLogsKept`: how long a tenant's writer that ran out of work keeps the logs it wrote
    /// open for its next write.
    public init(root: String, create: Bool = true, threadPool: NIOThreadPool = .singleton,
                groupCommitInterval: Duration = .zero, eventLog: EventLogRetention = .standard,
                idleLogsKept: Duration = .seconds(1),
                logger: Logger = Logger(label: "deskline.store")) async throws(DesklineError) {
        self.root = URL(fileURLWithPath: root).standardizedFileURL.path
        self.threadPool = threadPool
        self.groupCommitInterval = groupCommitInterval
        self.idleLogsKept = idleLogsKept
        self.eventLogRetention = eventLog
        self.logger = logger
        let root = self.root
        if !create && !FileManager.default.fileExists(atPath: root + "/tenants") {
            throw .notFound("there is no Deskline data directory at \(root) (`deskline serve` or `deskline tenant add` creates one)")
        }
        try await io {
            try DurableFile.makeDirectories(root + "/tenants")
            try DurableFile.makeDirectories(root + "/logins")
        }
    }

    // MARK: Paths (every component is a validated identifier or a hex digest)

    var accountsLock: String { root + "/accounts.lock" }
    func tenantDir(_ t: TenantID) -> String { root + "/tenants/" + t.rawValue }
    func tenantFile(_ t: TenantID) -> String { tenantDir(t) + "/tenant.json" }
    func countersFile(_ t: TenantID) -> String { tenantDir(t) + "/counters.json" }
    func userFile(_ u: UserID, _ t: TenantID) -> String { tenantDir(t) + "/users/" + u.rawValue + ".json" }
    func customerFile(_ c: CustomerID, _ t: TenantID) -> String { tenantDir(t) + "/customers/" + c.rawValue + ".json" }
    func loginFile(_ email: String) -> String { root + "/logins/" + Self.digest(email) + ".json" }
    func customerEmailFile(_ email: String, _ t: TenantID) -> String {
        tenantDir(t) + "/customer-emails/" + Self.digest(email) + ".json"
    }
    /// Emails become fixed-length, path-safe file names.
    private static func digest(_ email: String) -> String {
        SHA256.hash(data: Array(email.utf8)).map { String(format: "%02x", $0) }.joined()
    }

    // MARK: Store

    public func createTenant(_ tenant: Tenant) async throws(DesklineError) {
        try await io {
            try self.changeAccounts { transaction in
                if try self.load(Tenant.self, self.tenantFile(tenant.id)) != nil {
                    throw DesklineError.conflict("tenant \(tenant.id) already exists")
                }
                let dir = self.tenantDir(tenant.id)
                // tenant.json last: a tenant exists once its directory is complete.
                try transaction.commit([try self.write(Counters(), self.countersFile(tenant.id)),
                                        try self.write(tenant, self.tenantFile(tenant.id))],
                                       creating: [dir + "/users", dir + "/customers", dir + "/customer-emails"])
            }
        }
    }

    public func tenant(_ id: TenantID) async throws(DesklineError) -> Tenant? {
        try await io { try self.load(Tenant.self, self.tenantFile(id)) }
    }

    public func updateTenant(_ tenant: Tenant) async throws(DesklineError) -> Tenant {
        try await io {
            try self.changeAccounts { transaction in
                guard var stored = try self.load(Tenant.self, self.tenantFile(tenant.id)) else {
                    throw DesklineError.notFound("no tenant \(tenant.id)")
                }
                stored.name = tenant.name
                stored.motd = tenant.motd
                try transaction.commit([try self.write(stored, self.tenantFile(tenant.id))])
                return stored
            }
        }
    }

    public func tenants() async throws(DesklineError) -> [Tenant] {
        try await io {
            try DurableFile.list(self.root + "/tenants").sorted().compactMap { name in
                guard let id = TenantID(rawValue: name) else { return nil }
                return try self.load(Tenant.self, self.tenantFile(id))
            }
        }
    }

    public func createCustomer(_ draft: NewCustomer, in tenant: TenantID, at time: Date) async throws(DesklineError) -> Customer {
        try await io {
            try self.changeAccounts { transaction in
                try self.requireTenant(tenant)
                let emailFile = self.customerEmailFile(draft.email, tenant)
                if let existing = try self.load(CustomerEmail.self, emailFile) {
                    throw DesklineError.conflict("tenant \(tenant) already has a customer with email \(draft.email) (\(existing.customerId))")
                }
                let id = CustomerID.numbered(try self.spendNumber(\.customer, in: tenant, transaction))
                let customer = Customer(id: id, tenantId: tenant, name: draft.name, email: draft.email,
                                        phone: draft.phone, createdAt: Self.storedPrecision(time))
                try transaction.commit([try self.write(customer, self.customerFile(id, tenant)),
                                        try self.write(CustomerEmail(customerId: id), emailFile)])
                return customer
            }
        }
    }

    public func customer(_ id: CustomerID, in tenant: TenantID) async throws(DesklineError) -> Customer? {
        try await io {
            try self.settleAccountChange()
            return try self.load(Customer.self, self.customerFile(id, tenant))
        }
    }

    public func createUser(_ draft: NewUser, in tenant: TenantID, at time: Date) async throws(DesklineError) -> User {
        try await io {
            try self.changeAccounts { transaction in
                defer { self.usersChanged(tenant) }
                try self.requireTenant(tenant)
                var refs = try self.load([AccountRef].self, self.loginFile(draft.email)) ?? []
                if refs.contains(where: { $0.tenantId == tenant }) {
                    throw DesklineError.conflict("tenant \(tenant) already has a login \(draft.email)")
                }
                var customer: Customer?
                if let cid = draft.customerId {
                    guard let c = try self.load(Customer.self, self.customerFile(cid, tenant)) else {
                        throw DesklineError.notFound("no customer \(cid) in tenant \(tenant)")
                    }
                    if let existing = c.userId {
                        throw DesklineError.conflict("customer \(cid) already has a login (user \(existing))")
                    }
                    customer = c
                }
                let id = UserID.numbered(try self.spendNumber(\.user, in: tenant, transaction))
                let user = User(id: id, tenantId: tenant, email: draft.email, displayName: draft.displayName,
                                role: draft.role, passwordHash: draft.passwordHash, customerId: draft.customerId,
                                createdAt: Self.storedPrecision(time), tenantLoginOnly: draft.tenantLoginOnly ? true : nil)
                // All or nothing; the login index last, so that a reader never finds a login whose
                // user or back-link is not written yet (and an undo removes it first).
                var writes = [try self.write(user, self.userFile(id, tenant))]
                if var customer {
                    customer.userId = id
                    writes.append(try self.write(customer, self.customerFile(customer.id, tenant)))
                }
                refs.append(AccountRef(tenantId: tenant, userId: id))
                writes.append(try self.write(refs, self.loginFile(draft.email)))
                try transaction.commit(writes)
                return user
            }
        }
    }

    public func user(_ id: UserID, in tenant: TenantID) async throws(DesklineError) -> User? {
        // (A user the list does not have yet, say just added by the CLI, is looked for on disk.)
        if let user = recentUsers(tenant)?.byId[id] { return user }
        return try await io {
            // From the kept user list while it is current; otherwise from the user's own file.
            if let cached = self.freshUserCache(tenant).entry { return cached.byId[id] }
            try self.settleAccountChange()
            return try self.load(User.self, self.userFile(id, tenant))
        }
    }

    public func storedUser(_ id: UserID, in tenant: TenantID) async throws(DesklineError) -> User? {
        try await io {
            try self.settleAccountChange()
            return try self.load(User.self, self.userFile(id, tenant))
        }
    }

    public func accounts(withEmail email: String) async throws(DesklineError) -> [AccountRef] {
        try await io {
            try self.settleAccountChange()
            return try self.load([AccountRef].self, self.loginFile(email)) ?? []
        }
    }

    @discardableResult
    public func setPasswordHash(_ hash: PasswordHash, for id: UserID, in tenant: TenantID,
                                ifCurrent expected: PasswordHash?) async throws(DesklineError) -> Bool {
        try await io {
            try self.changeAccounts { transaction in
                defer { self.usersChanged(tenant) }
                guard var user = try self.load(User.self, self.userFile(id, tenant)) else {
                    throw DesklineError.notFound("no user \(id) in tenant \(tenant)")
                }
                if let expected, user.passwordHash != expected { return false }
                user.passwordHash = hash
                try transaction.commit([try self.write(user, self.userFile(id, tenant))])
                return true
            }
        }
    }

    // MARK: Helpers (blocking; called inside `io`)

    /// `customer-emails/<sha256>.json`: keeps customer emails unique within a tenant.
    struct CustomerEmail: Codable {
        var customerId: CustomerID
    }

    struct Counters: Codable {
        var customer = 0
        var user = 0
    }

    /// The next id number, spent: the counter's increment is committed on its own, before the
    /// create that uses the number. A create's files are visible while it is under way (and an
    /// admin may assign a ticket to the new user, or the server notify it, in that moment), so the
    /// number of a refused create is never handed out again: a gap in the ids is harmless, another
    /// account inheriting those references is not.
    private func spendNumber(_ key: WritableKeyPath<Counters, Int>, in tenant: TenantID,
                             _ transaction: AccountTransaction) throws -> Int {
        var counters = try load(Counters.self, countersFile(tenant)) ?? Counters()
        counters[keyPath: key] += 1
        try transaction.commit([try write(counters, countersFile(tenant))])
        return counters[keyPath: key]
    }

    /// Runs an account change holding `accounts.lock`, after undoing an interrupted earlier one.
    /// `body` writes through the transaction it is given (see ``AccountTransaction``).
    func changeAccounts<T>(_ body: (AccountTransaction) throws -> T) throws -> T {
        try FileLock.with(accountsLock) {
            try undoInterruptedAccountChange()
            return try body(accountTransaction)
        }
    }

    /// A transaction over this data directory's accounts (see ``AccountTransaction``).
    var accountTransaction: AccountTransaction { AccountTransaction(root: root, faults: faults, logger: logger) }

    /// Undoes an interrupted account change, if one is pending; call holding `accounts.lock`.
    /// Returns what it undid.
    @discardableResult
    func undoInterruptedAccountChange() throws -> AccountTransaction.Intent? {
        let undone = try accountTransaction.recover()
        if undone != nil { allUsersChanged() }
        return undone
    }

    /// Before a read that LOGIN (or a record read from disk) relies on: an account change that
    /// another process left unfinished (its intent is there, yet nobody holds `accounts.lock`:
    /// the admin CLI died, or its undo failed) is undone first, as the next account change would,
    /// so no read takes its uncommitted files for the accounts' state. One `access` when there is
    /// no intent; if the lock is held, a change is under way (its files show as it writes them).
    /// Throws if the undo fails: the state is then not known to be committed.
    func settleAccountChange() throws {
        guard access(root + "/" + AccountTransaction.intentName, F_OK) == 0,
              let lock = try FileLock.tryAcquire(accountsLock) else { return }
        defer { lock.release() }
        try undoInterruptedAccountChange()
    }

    func requireTenant(_ tenant: TenantID) throws {
        guard try load(Tenant.self, tenantFile(tenant)) != nil else {
            throw DesklineError.notFound("no tenant \(tenant)")
        }
    }

    /// Timestamps are stored as ISO 8601 UTC with milliseconds (`2026-11-25T14:54:23.395Z`);
    /// records are built from times already cut to milliseconds, so what a create returns equals
    /// what a later read returns.
    static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        e.dateEncodingStrategy = .desklineTimestamp
        return e
    }()

    static let decoder = JSONDecoder.desklineRecords()

    static func storedPrecision(_ time: Date) -> Date { Timestamp.truncate(time) }

    func load<T: Decodable>(_ type: T.Type, _ path: String) throws -> T? {
        guard let data = try DurableFile.read(path) else { return nil }
        let decoder = Self.decoder
        do {
            return try decoder.decode(T.self, from: data)
        } catch {
            // The details are for the operator's log, not for a client.
            logger.error("damaged file in the store", metadata: ["path": "\(path)", "error": "\(error)"])
            throw DesklineError.storage("stored data is damaged; the operator has been told in the server log")
        }
    }

    func save<T: Encodable>(_ value: T, _ path: String) throws {
        try DurableFile.replace(path, with: try Self.document(value))
    }

    /// `value` as the stored JSON document at `path`, for an ``AccountTransaction``.
    func write<T: Encodable>(_ value: T, _ path: String) throws -> AccountTransaction.Write {
        AccountTransaction.Write(path: path, data: try Self.document(value))
    }

    static func document<T: Encodable>(_ value: T) throws -> Data {
        var data = try encoder.encode(value)
        data.append(0x0A)
        return data
    }

    /// Runs blocking file work on the thread pool; any non-domain error becomes `storage`.
    func io<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws(DesklineError) -> T {
        do {
            return try await threadPool.runIfActive(body)
        } catch let error as DesklineError {
            throw error
        } catch {
            logger.error("storage operation failed", metadata: ["error": "\(error)"])
            throw .storage("the store could not complete the operation; nothing was changed")
        }
    }
}

extension FileStore {
    /// Proof that this process is the one server using the data directory. Release it on exit.
    public final class ServerLock: Sendable {
        fileprivate let lock: FileLock
        fileprivate init(_ lock: FileLock) { self.lock = lock }

        /// Releases the lock. `clean` records that every write finished, so the next server can
        /// skip recovery.
        public func release(clean: Bool = false) {
            if clean { lock.write(FileStore.cleanStopMark + "\n") }
            lock.release()
        }
    }

    static let cleanStopMark = "stopped cleanly"

    private var serverLockPath: String { root + "/server.lock" }

    /// Takes the data directory's server lock; throws `conflict` naming the holder if another
    /// server runs on this directory. If the last server did not stop cleanly, every tenant is
    /// checked before its first write (``recoverTenant(_:)``, and ``recoverAllTenants()``).
    public func lockForServer(pid: Int32) async throws(DesklineError) -> ServerLock {
        let path = serverLockPath
        let root = self.root
        let lock = try await io { () throws -> FileLock? in
            guard let lock = try FileLock.tryAcquire(path) else { return nil }
            // A data directory without tenants has nothing to recover (a fresh one, say), nor
            // has one no server ever held: a server writes "pid N" into the lock first thing,
            // and the admin CLI, which only asks whether one runs, writes nothing.
            let tenants = try DurableFile.list(self.root + "/tenants")
            let holder = FileLock.holderDescription(path)
            let unclean = !tenants.isEmpty && holder != nil && holder != Self.cleanStopMark
            lock.write("pid \(pid)\n")
            // (Synced, with the directory entry of a lock file made just now: after a power
            // loss the next start must still find that a server ran here.)
            try DurableFile.syncDirectory(self.root)
            // Writes acknowledged before an unclean stop go back into their logs first (a
            // clean stop leaves every journal empty: one `stat` per tenant).
            for name in tenants {
                let dir = self.root + "/tenants/" + name
                guard Journal.hasRecords(tenantDir: dir) else { continue }
                let records = try Journal.replay(tenantDir: dir)
                self.logger.notice("replayed a tenant's journal after an unclean stop", metadata: ["tenant": "\(name)", "batches": "\(records)"])
            }
            // An account change the admin CLI (or a server) left interrupted is undone, whether the
            // last server stopped cleanly or not: the CLI may have died meanwhile. If that fails,
            // the next account change tries again (and refuses to run until it succeeds).
            do {
                try FileLock.with(self.accountsLock) {
                    if let undone = try self.undoInterruptedAccountChange() {
                        self.accountChangeUndoneAtStart.withLock { $0 = undone }
                    }
                    if unclean {
                        self.sweepTemporaryFiles(in: self.root)
                        self.sweepTemporaryFiles(in: self.root + "/logins")
                    }
                }
            } catch {
                self.logger.error("an interrupted account change could not be undone", metadata: ["error": "\(error)"])
            }
            if unclean { self.needsRecovery.store(true, ordering: .relaxed) }
            return lock
        }
        guard let lock else {
            let holder = FileLock.holderDescription(path).map { " (\($0))" } ?? ""
            throw .conflict("another Deskline server is already using the data directory \(root)\(holder)")
        }
        if let old = try await earlierLayout() {
            lock.release()
            throw .storage("the data directory \(root) was written by an earlier development version of Deskline (\(old) exists); this version keeps tickets, calls and inboxes as logs (docs/STORAGE.md) and has no converter: move that directory away and start again")
        }
        return ServerLock(lock)
    }

    /// A file that only the storage layout before ticket logs carried their state had (each
    /// tenant's `tickets/counters.json`), or nil. One `access` per tenant.
    func earlierLayout() async throws(DesklineError) -> String? {
        try await io {
            for name in try DurableFile.list(self.root + "/tenants") {
                let path = self.root + "/tenants/" + name + "/tickets/counters.json"
                if access(path, F_OK) == 0 { return path }
            }
            return nil
        }
    }

    /// Whether a server currently holds the data directory (for the admin CLI's messages).
    public func isServerRunning() async -> Bool {
        let path = serverLockPath
        return (try? await io { () throws -> Bool in
            guard let lock = try FileLock.tryAcquire(path) else { return true }
            lock.release()
            return false
        }) ?? false
    }
}

