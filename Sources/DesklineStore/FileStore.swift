import Crypto
import DesklineCore
import Foundation
import Logging
import NIOPosix

/// The embedded, file-backed ``Store``: one directory per tenant, small JSON documents replaced
/// atomically. Layout and reasoning: docs/STORAGE.md.
///
/// All file I/O runs on a thread pool, never on the caller's thread. Account writes hold the
/// data directory's `accounts.lock` (`flock`), which the admin CLI takes too, so a CLI write
/// while a server runs is neither lost nor interleaved. Nothing is cached: a login created by the
/// CLI is visible to a running server at once.
public final class FileStore: Store {
    /// The data directory.
    public let root: String
    private let threadPool: NIOThreadPool
    private let logger: Logger

    /// Opens (and if needed creates) a data directory.
    public init(root: String, threadPool: NIOThreadPool = .singleton, logger: Logger = Logger(label: "deskline.store")) async throws(DesklineError) {
        self.root = (root as NSString).standardizingPath
        self.threadPool = threadPool
        self.logger = logger
        let root = self.root
        let removed = try await io { () throws -> Int in
            try DurableFile.makeDirectories(root + "/tenants")
            try DurableFile.makeDirectories(root + "/logins")
            var removed = try DurableFile.removeLeftoverTempFiles(in: root + "/logins")
            for tenant in try DurableFile.list(root + "/tenants") where TenantID.isValid(tenant) {
                let dir = root + "/tenants/" + tenant
                for sub in ["", "/users", "/customers"] {
                    removed += try DurableFile.removeLeftoverTempFiles(in: dir + sub)
                }
            }
            return removed
        }
        if removed > 0 {
            logger.notice("removed leftover temp files of interrupted writes", metadata: ["count": "\(removed)", "root": "\(root)"])
        }
    }

    // MARK: Paths (every component is a validated identifier or a hex digest)

    private var accountsLock: String { root + "/accounts.lock" }
    private func tenantDir(_ t: TenantID) -> String { root + "/tenants/" + t.rawValue }
    private func tenantFile(_ t: TenantID) -> String { tenantDir(t) + "/tenant.json" }
    private func countersFile(_ t: TenantID) -> String { tenantDir(t) + "/counters.json" }
    private func userFile(_ u: UserID, _ t: TenantID) -> String { tenantDir(t) + "/users/" + u.rawValue + ".json" }
    private func customerFile(_ c: CustomerID, _ t: TenantID) -> String { tenantDir(t) + "/customers/" + c.rawValue + ".json" }
    private func loginFile(_ email: String) -> String {
        let digest = SHA256.hash(data: Array(email.utf8)).map { String(format: "%02x", $0) }.joined()
        return root + "/logins/" + digest + ".json"
    }

    // MARK: Store

    public func createTenant(_ tenant: Tenant) async throws(DesklineError) {
        try await io {
            try FileLock.with(self.accountsLock) {
                if try self.load(Tenant.self, self.tenantFile(tenant.id)) != nil {
                    throw DesklineError.conflict("tenant \(tenant.id) already exists")
                }
                let dir = self.tenantDir(tenant.id)
                try DurableFile.makeDirectories(dir + "/users")
                try DurableFile.makeDirectories(dir + "/customers")
                try self.save(Counters(), self.countersFile(tenant.id))
                // tenant.json last: a tenant exists once its directory is complete.
                try self.save(tenant, self.tenantFile(tenant.id))
            }
        }
    }

    public func tenant(_ id: TenantID) async throws(DesklineError) -> Tenant? {
        try await io { try self.load(Tenant.self, self.tenantFile(id)) }
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
            try FileLock.with(self.accountsLock) {
                try self.requireTenant(tenant)
                let id = CustomerID(unchecked: "c\(try self.nextNumber(\.customer, in: tenant))")
                let customer = Customer(id: id, tenantId: tenant, name: draft.name, email: draft.email,
                                        phone: draft.phone, createdAt: time)
                try self.save(customer, self.customerFile(id, tenant))
                return customer
            }
        }
    }

    public func customer(_ id: CustomerID, in tenant: TenantID) async throws(DesklineError) -> Customer? {
        try await io { try self.load(Customer.self, self.customerFile(id, tenant)) }
    }

    public func createUser(_ draft: NewUser, in tenant: TenantID, at time: Date) async throws(DesklineError) -> User {
        try await io {
            try FileLock.with(self.accountsLock) {
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
                let id = UserID(unchecked: "u\(try self.nextNumber(\.user, in: tenant))")
                let user = User(id: id, tenantId: tenant, email: draft.email, displayName: draft.displayName,
                                role: draft.role, passwordHash: draft.passwordHash, customerId: draft.customerId,
                                createdAt: time)
                // Order matters for crash safety: the user, then the customer's back-link, then
                // the login index — an account can log in only once all its parts are on disk.
                try self.save(user, self.userFile(id, tenant))
                if var customer {
                    customer.userId = id
                    try self.save(customer, self.customerFile(customer.id, tenant))
                }
                refs.append(AccountRef(tenantId: tenant, userId: id))
                try self.save(refs, self.loginFile(draft.email))
                return user
            }
        }
    }

    public func user(_ id: UserID, in tenant: TenantID) async throws(DesklineError) -> User? {
        try await io { try self.load(User.self, self.userFile(id, tenant)) }
    }

    public func accounts(withEmail email: String) async throws(DesklineError) -> [AccountRef] {
        try await io { try self.load([AccountRef].self, self.loginFile(email)) ?? [] }
    }

    public func setPasswordHash(_ hash: PasswordHash, for id: UserID, in tenant: TenantID) async throws(DesklineError) {
        try await io {
            try FileLock.with(self.accountsLock) {
                guard var user = try self.load(User.self, self.userFile(id, tenant)) else {
                    throw DesklineError.notFound("no user \(id) in tenant \(tenant)")
                }
                user.passwordHash = hash
                try self.save(user, self.userFile(id, tenant))
            }
        }
    }

    // MARK: Helpers (blocking; called inside `io`)

    private struct Counters: Codable {
        var customer = 0
        var user = 0
    }

    private func nextNumber(_ key: WritableKeyPath<Counters, Int>, in tenant: TenantID) throws -> Int {
        var counters = try load(Counters.self, countersFile(tenant)) ?? Counters()
        counters[keyPath: key] += 1
        try save(counters, countersFile(tenant))
        return counters[keyPath: key]
    }

    private func requireTenant(_ tenant: TenantID) throws {
        guard try load(Tenant.self, tenantFile(tenant)) != nil else {
            throw DesklineError.notFound("no tenant \(tenant)")
        }
    }

    private static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        e.dateEncodingStrategy = .iso8601
        return e
    }()

    private func load<T: Decodable>(_ type: T.Type, _ path: String) throws -> T? {
        guard let data = try DurableFile.read(path) else { return nil }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        do {
            return try decoder.decode(T.self, from: data)
        } catch {
            throw DesklineError.storage("corrupt file \(path): \(error)")
        }
    }

    private func save<T: Encodable>(_ value: T, _ path: String) throws {
        var data = try Self.encoder.encode(value)
        data.append(0x0A)
        try DurableFile.replace(path, with: data)
    }

    /// Runs blocking file work on the thread pool; any non-domain error becomes `storage`.
    private func io<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws(DesklineError) -> T {
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
