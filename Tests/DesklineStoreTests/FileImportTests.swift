import DesklineCore
import DesklineStore
import Foundation
import Testing

/// The file store's import as a crash or a failure may leave it (docs/STORAGE.md, "Moving data").
struct FileImportTests {
    let root = NSTemporaryDirectory() + "deskline-import-" + UUID().uuidString

    struct Inline: BlockingExecutor {
        func run<T: Sendable>(_ work: @escaping @Sendable () throws(DesklineError) -> T) async throws(DesklineError) -> T { try work() }
    }

    func accounts(_ store: any Store) -> AccountService {
        AccountService(store: store, hasher: PasswordHasher(cost: PasswordHashingCost(n: 1024, r: 8, p: 1)), passwordWork: Inline())
    }

    /// A store with acme: Ann (c1/u1) and agent Amy (u2), passwords "password ann" and "password amy".
    func seeded() async throws -> (FileStore, AccountService) {
        let store = try await FileStore(root: root)
        let service = accounts(store)
        let acme = try await service.createTenant(id: "acme", name: "Acme").id
        let ann = try await service.createCustomer(in: acme, name: "Ann", email: "ann@x.test", phone: nil)
        _ = try await service.createUser(in: acme, email: "ann@x.test", displayName: nil, role: .customer, customer: ann.id, password: "password ann")
        _ = try await service.createUser(in: acme, email: "amy@x.test", displayName: "Amy", role: .agent, customer: nil, password: "password amy")
        return (store, service)
    }

    @Test func aReplacingImportSwapsTheTenantWholeAndItsLoginsWithIt() async throws {
        let (store, service) = try await seeded()
        let acme = TenantID(rawValue: "acme")!
        var dump = try #require(try await TenantDump.read(acme, from: store))
        // Amy's login becomes zed@x.test in the new acme.
        dump.users[1].email = "zed@x.test"
        try await store.importTenant(dump, replacing: true)
        #expect(try await TenantDump.read(acme, from: store) == dump)
        #expect(try FileManager.default.contentsOfDirectory(atPath: root).filter { $0.hasPrefix(".import-") } == [])
        #expect(try await service.login("acme/zed@x.test", password: "password amy").userId == UserID.numbered(2))
        await #expect(throws: DesklineError.loginFailed) { try await service.login("acme/amy@x.test", password: "password amy") }
        await #expect(throws: DesklineError.loginFailed) { try await service.login("amy@x.test", password: "password amy") }
        let report = try await store.check(repair: false)
        #expect(report.problems == [])
    }

    /// A crash between the swap and the index's last change leaves index lines naming users whose
    /// email is another: a LOGIN never follows them, and check --repair removes them.
    @Test func aStaleLoginIndexLineNeverLogsIntoAnotherUser() async throws {
        let (store, service) = try await seeded()
        let acme = TenantID(rawValue: "acme")!
        // Ann's index file names Amy (u2) instead of her, as a crash mid-import can leave it.
        var annFile: String?
        for name in try FileManager.default.contentsOfDirectory(atPath: root + "/logins") {
            let refs = try JSONDecoder().decode([AccountRef].self, from: Data(contentsOf: URL(fileURLWithPath: root + "/logins/" + name)))
            if refs == [AccountRef(tenantId: acme, userId: .numbered(1))] { annFile = root + "/logins/" + name }
        }
        let path = try #require(annFile)
        try JSONEncoder().encode([AccountRef(tenantId: acme, userId: .numbered(2))]).write(to: URL(fileURLWithPath: path))
        #expect(try await store.accounts(withEmail: "ann@x.test") == [AccountRef(tenantId: acme, userId: .numbered(2))])
        // Amy's password with Ann's email: the lookup checks the stored email, so it never
        // reaches Amy.
        await #expect(throws: DesklineError.loginFailed) { try await service.login("acme/ann@x.test", password: "password amy") }
        await #expect(throws: DesklineError.loginFailed) { try await service.login("ann@x.test", password: "password amy") }
        #expect(try await service.login("acme/amy@x.test", password: "password amy").userId == UserID.numbered(2))
        let report = try await store.check(repair: false)
        #expect(!report.isClean)
    }

    /// A log pruned by time elsewhere (PostgreSQL) starts after 1: the file store takes it as it
    /// is, check finds it clean, and numbering goes on after its last event.
    @Test func anEventLogThatStartsLaterIsTakenAsItIs() async throws {
        let (store, _) = try await seeded()
        let acme = TenantID(rawValue: "acme")!
        for subject in ["a", "b", "c", "d"] { _ = try await store.openTicket(customer: .numbered(1), subject: subject, in: acme, at: Date()) }
        var dump = try #require(try await TenantDump.read(acme, from: store))
        dump.events.removeFirst(2)
        let other = try await FileStore(root: root + "-other")
        defer { try? FileManager.default.removeItem(atPath: root + "-other") }
        try await other.importTenant(dump, replacing: false)
        #expect(try await other.check(repair: false).problems == [])
        #expect(try await other.events(in: acme, after: 0, limit: 10).compactMap(\.seq) == [3, 4])
        let next = try await other.openTicket(customer: .numbered(1), subject: "e", in: acme, at: Date())
        #expect(next.id == TicketID(1005))
        #expect(try await other.events(in: acme, after: 0, limit: 10).compactMap(\.seq) == [3, 4, 5])
    }

    @Test func aLeftoverStagingDirectoryIsReportedAndRepairRemovesIt() async throws {
        let (store, _) = try await seeded()
        try FileManager.default.createDirectory(atPath: root + "/.import-acme/users", withIntermediateDirectories: true)
        let report = try await store.check(repair: false)
        #expect(report.problems.contains { $0.contains(".import-acme: leftover directory of an interrupted import") })
        let repaired = try await store.check(repair: true)
        #expect(repaired.isClean)
        #expect(!FileManager.default.fileExists(atPath: root + "/.import-acme"))
    }
}
