import DesklineCore
import DesklineStore
import DesklinePostgresTesting
import Foundation
import NIOPosix
import Synchronization
import Testing

/// Every backend of the ``Store`` port; each conformance test runs once per case. A new backend
/// is one case here and one branch in ``make()``.
enum StoreKind: String, CaseIterable, CustomTestStringConvertible {
    case inMemory
    case file
    case postgres

    var testDescription: String { rawValue }

    /// A new, empty store of this kind.
    func make() async throws -> any Store {
        switch self {
        case .inMemory:
            return InMemoryStore()
        case .file:
            let root = NSTemporaryDirectory() + "deskline-conformance-" + UUID().uuidString
            return try await FileStore(root: root, threadPool: Self.fileStoreThreads)
        case .postgres:
            return try await TestPostgres.store()
        }
    }

    /// The file stores' own I/O threads: the suite's many small durable writes would otherwise
    /// queue on the shared pool ahead of other suites' timed reads.
    private static let fileStoreThreads: NIOThreadPool = {
        let pool = NIOThreadPool(numberOfThreads: 2)
        pool.start()
        return pool
    }()

    /// A store with two tenants: in acme customers Ann (c1, login u1) and Bob (c2, login u2) and
    /// agent Amy (u3); in globex customer Gus (c1, login u1).
    func seeded() async throws -> World {
        try await World.seed(try await make())
    }
}

/// A seeded store and the names the conformance tests use.
struct World: Sendable {
    /// `store` with ``StoreKind/seeded()``'s tenants and people.
    static func seed(_ store: any Store) async throws -> World {
        let world = World(store: store)
        let now = Date()
        try await store.createTenant(Tenant(id: world.acme, name: "Acme", createdAt: now))
        try await store.createTenant(Tenant(id: world.globex, name: "Globex", createdAt: now))
        for (tenant, name) in [(world.acme, "ann"), (world.acme, "bob"), (world.globex, "gus")] {
            let customer = try await store.createCustomer(NewCustomer(name: name, email: "\(name)@x.test", phone: "+1 555 0100"), in: tenant, at: now)
            _ = try await store.createUser(world.newUser(name, .customer, customer: customer.id), in: tenant, at: now)
        }
        _ = try await store.createUser(world.newUser("amy", .agent), in: world.acme, at: now)
        return world
    }

    let store: any Store
    let acme = TenantID(rawValue: "acme")!
    let globex = TenantID(rawValue: "globex")!
    let ann = UserID.numbered(1)
    let bob = UserID.numbered(2)
    let amy = UserID.numbered(3)
    let annC = CustomerID.numbered(1)
    let bobC = CustomerID.numbered(2)

    static func hash(_ tag: String) -> PasswordHash {
        PasswordHash(algorithm: "scrypt", n: 1024, r: 8, p: 1, salt: "salt-\(tag)", hash: "hash-\(tag)")
    }

    func newUser(_ name: String, _ role: Role, customer: CustomerID? = nil) -> NewUser {
        NewUser(email: "\(name)@x.test", displayName: name, role: role, passwordHash: Self.hash(name), customerId: customer)
    }

    /// A time as stores keep it (milliseconds).
    var now: Date { Timestamp.truncate(Date()) }

    func draft(_ kind: TicketEntry.Kind, _ text: String, by author: UserID? = nil) -> TicketEntryDraft {
        let author = author ?? (kind == .message ? ann : amy)
        return TicketEntryDraft(kind: kind, authorId: author, authorName: author == ann ? "ann" : "amy",
                                authorRole: author == amy ? .agent : .customer, text: text)
    }

    /// Opens a ticket of Ann's (or `customer`'s) in acme (or `tenant`).
    func open(_ subject: String = "Printer", customer: CustomerID? = nil, in tenant: TenantID? = nil) async throws -> Ticket {
        try await store.openTicket(customer: customer ?? annC, subject: subject, in: tenant ?? acme, at: now)
    }

    /// A decision that appends `draft` and tells `users` about it.
    func telling(_ users: [UserID], _ draft: TicketEntryDraft, tenant: TenantID? = nil) -> TicketDecision {
        let tenant = tenant ?? acme
        let time = now
        return { state in
            var ticket = state.ticket
            let entry = ticket.append(draft, at: time)
            var event = TicketEvent(kind: .entry, tenantId: tenant, ticket: ticket, entry: entry,
                                    actor: Actor(id: draft.authorId, name: draft.authorName, role: draft.authorRole), at: time)
            event.recipients = users
            return Change(ticket: ticket, entry: entry, inbox: InboxDelivery(event), event: event)
        }
    }

    /// Appends `draft` to `ticket`, nobody told; returns the entry.
    @discardableResult
    func append(_ draft: TicketEntryDraft, to ticket: TicketID, in tenant: TenantID? = nil) async throws -> TicketEntry {
        try #require(try await store.appendEntry(draft, to: ticket, in: tenant ?? acme, at: now)?.1)
    }
}

/// Counts calls from any thread.
final class Counter: Sendable {
    private let count = Atomic<Int>(0)
    func tick() { count.add(1, ordering: .relaxed) }
    var value: Int { count.load(ordering: .relaxed) }
}
