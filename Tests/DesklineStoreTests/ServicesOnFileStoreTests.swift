@testable import DesklineCore
@testable import DesklineStore
import Foundation
import Testing

/// Core's services on the file store, where what they protect depends on its writer or on its
/// files being shared between processes (Core's own tests use the in-memory store).
struct ServicesOnFileStoreTests {
    static let cost = PasswordHashingCost(n: 1024, r: 8, p: 1)

    func fileAccounts(root: String) async throws -> (AccountService, FileStore) {
        let store = try await FileStore(root: root)
        return (AccountService(store: store, hasher: PasswordHasher(cost: Self.cost), passwordWork: InlinePasswordWork()), store)
    }

    func temporaryRoot() -> String { NSTemporaryDirectory() + "deskline-services-" + UUID().uuidString }

    @Test func aNewTicketIsStoredWithItsNotificationsInOneCommitAndPublishedInCommitOrder() async throws {
        let (accounts, store) = try await fileAccounts(root: temporaryRoot())
        let acme = try await accounts.createTenant(id: "acme", name: "Acme").id
        let c = try await accounts.createCustomer(in: acme, name: "Ann", email: "ann@x.test", phone: nil)
        _ = try await accounts.createUser(in: acme, email: "ann@x.test", displayName: nil, role: .customer, customer: c.id, password: "password1")
        let ada = try await accounts.createUser(in: acme, email: "ada@x.test", displayName: "Ada", role: .admin, customer: nil, password: "password1")
        let tickets = TicketService(store: store)
        let ann = try await accounts.login("ann@x.test", password: "password1")
        let feed = store.committedEvents()

        // One commit for the ticket and the admins' notifications.
        let before = store.writeStatistics().commits
        let first = try await tickets.create(ann, subject: "Printer")
        #expect(store.writeStatistics().commits - before == 1)
        let inbox = try await store.inbox(of: ada.id, in: acme)
        #expect(inbox.items.map { $0.type } == ["new"])

        // A new ticket and a message stored in one batch are published in the order they were
        // stored, numbered in that order.
        let release = await store.writer(acme).hold()
        let second = Task { try await tickets.create(ann, subject: "Scanner") }
        while store.writer(acme).queuedJobs < 1 { try await Task.sleep(for: .milliseconds(1)) }
        let message = Task { try await tickets.post(ann, first.id, text: "It is on fire") }
        while store.writer(acme).queuedJobs < 2 { try await Task.sleep(for: .milliseconds(1)) }
        release()
        let created = try await second.value
        _ = try await message.value
        let published = Array(await EventLogTests.collect(3, from: feed).joined())
        #expect(published.map(\.kind) == [.created, .created, .entry])
        #expect(published.map(\.ticket?.id) == [first.id, created.id, first.id])
        #expect(published.map(\.seq) == [1, 2, 3])
        #expect(try await store.events(in: acme, after: 0, limit: 10) == published)
    }

    /// The admin CLI is another process with its own store on the same data directory.
    @Test func aPasswordSetByTheCLICountsAtTheServersVeryNextLogin() async throws {
        let root = temporaryRoot()
        let (server, serverStore) = try await fileAccounts(root: root)
        let tenant = try await server.createTenant(id: "acme", name: "Acme")
        let amy = try await server.createUser(in: tenant.id, email: "amy@acme.test", displayName: "Amy", role: .agent,
                                              customer: nil, password: "old password")
        _ = try await server.login("amy@acme.test", password: "old password")
        // The running server keeps its user list (every ticket event asks for it).
        #expect(try await serverStore.users(in: tenant.id).map(\.id) == [amy.id])
        #expect(try await serverStore.user(amy.id, in: tenant.id) != nil)

        let (cli, _) = try await fileAccounts(root: root)
        try await cli.setPassword(in: tenant.id, email: "amy@acme.test", password: "new password")
        // At once, not a second later: the old password is refused, the new one accepted.
        await #expect(throws: DesklineError.loginFailed) { try await server.login("amy@acme.test", password: "old password") }
        _ = try await server.login("amy@acme.test", password: "new password")
        // PASSWD checks the current password against the stored one too.
        let scope = try await server.login("amy@acme.test", password: "new password")
        try await cli.setPassword(in: tenant.id, email: "amy@acme.test", password: "third password")
        try await server.changePassword(scope, current: "third password", new: "fourth password")
    }
}
