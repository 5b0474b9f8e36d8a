import DesklineCore
@testable import DesklineStore
import Foundation
import Testing

/// Account changes (tenant, customer, user, password, profile) are all or nothing: a failure
/// at any step of any of them, on a full disk or a dying device, leaves the files exactly as
/// they were, and an interrupted change is undone before anything else touches the accounts.
struct AccountTransactionTests {
    let root = NSTemporaryDirectory() + "deskline-accounts-" + UUID().uuidString
    let acme = TenantID(rawValue: "acme")!
    static let hasher = PasswordHasher(cost: PasswordHashingCost(n: 1024, r: 8, p: 1))
    /// The seeded users' password ("old password"), and the one the changes give ("new password").
    let hash = try! hasher.hash("old password")
    let newHash = try! hasher.hash("new password")

    /// A tenant with one customer (c1, with login u1) and one agent (u2).
    func seeded() async throws -> FileStore {
        let store = try await FileStore(root: root)
        try await store.createTenant(Tenant(id: acme, name: "Acme", createdAt: Date()))
        let c = try await store.createCustomer(NewCustomer(name: "Ann", email: "ann@x.test", phone: nil), in: acme, at: Date())
        _ = try await store.createUser(NewUser(email: "ann@x.test", displayName: "Ann", role: .customer, passwordHash: hash, customerId: c.id),
                                       in: acme, at: Date())
        _ = try await store.createUser(NewUser(email: "amy@x.test", displayName: "Amy", role: .agent, passwordHash: hash, customerId: nil),
                                       in: acme, at: Date())
        return store
    }

    /// Every file and directory under the data directory with its content (the lock files aside).
    func snapshot() -> [String: Data] {
        var result: [String: Data] = [:]
        for path in (FileManager.default.enumerator(atPath: root)?.allObjects as? [String]) ?? []
        where !path.hasSuffix(".lock") {
            result[path] = DurableFile.isDirectory(root + "/" + path) ? Data("directory".utf8) : FileManager.default.contents(atPath: root + "/" + path)
        }
        return result
    }

    enum Change: String, CaseIterable, CustomTestStringConvertible {
        case tenant, customer, customerLogin, agent, password, profile
        var testDescription: String { rawValue }
    }

    func make(_ change: Change, _ store: FileStore) async throws {
        switch change {
        case .tenant:
            try await store.createTenant(Tenant(id: TenantID(rawValue: "globex")!, name: "Globex", createdAt: Date()))
        case .customer:
            _ = try await store.createCustomer(NewCustomer(name: "Bob", email: "bob@x.test", phone: nil), in: acme, at: Date())
        case .customerLogin:
            // Needs a customer without a login: made before the faults (see the test).
            _ = try await store.createUser(NewUser(email: "cy@x.test", displayName: "Cy", role: .customer, passwordHash: hash,
                                                   customerId: CustomerID(rawValue: "c2")!), in: acme, at: Date())
        case .agent:
            _ = try await store.createUser(NewUser(email: "al@x.test", displayName: "Al", role: .agent, passwordHash: newHash, customerId: nil),
                                           in: acme, at: Date())
        case .password:
            try await store.setPasswordHash(newHash, for: UserID(rawValue: "u1")!, in: acme, ifCurrent: nil)
        case .profile:
            _ = try await store.updateCustomer(CustomerID(rawValue: "c1")!, in: acme) { customer, user in
                customer.name = "Ann B"
                user?.displayName = "Ann B"
            }
        }
    }

    /// Makes `change` on a seeded store with a fault armed by `arm(step)`, for step 0, 1, 2, ...
    /// until the change gets through (the fault came after its last step); `refused` looks at
    /// the files after each refusal, whose snapshot before the change it gets. Returns the store
    /// and the number of steps, at least 8: each file's intent, kept old version, replace (write,
    /// fsync, rename, directory fsync) and the commit. A change that every step fails from the
    /// commit's last sync on (the process died there) is made: its intent, already removed, cannot
    /// be written again to undo it.
    func walkSteps(_ change: Change, arm: (FaultInjection, Int) -> Void,
                   refused: (Int, any Error, [String: Data]) async throws -> Void) async throws -> FileStore {
        let store = try await seeded()
        if change == .customerLogin {
            _ = try await store.createCustomer(NewCustomer(name: "Cy", email: "cy@x.test", phone: nil), in: acme, at: Date())
        }
        let before = snapshot()
        var step = 0
        while true {
            arm(store.faults, step)
            var madePastItsCommit = false
            do {
                try await make(change, store)
            } catch let error as DesklineError where error == .storage(AccountTransaction.keptWhole) {
                madePastItsCommit = true
            } catch {
                try await refused(step, error, before)
                step += 1
                continue
            }
            #expect(store.faults.disarmStepFault() || madePastItsCommit, "step \(step) of \(change) failed, yet the change was reported as made")
            break
        }
        #expect(step >= 8, "\(change) has only \(step) steps")
        #expect(snapshot() != before)
        // (The old versions it kept are then leftovers, which the next change of each file removes.)
        #expect(try await store.check(repair: false).problems.filter { !$0.hasSuffix("(a leftover)") } == [])
        return store
    }

    @Test(arguments: Change.allCases, [ENOSPC, EIO])
    func aFailureAtAnyStepOfAnAccountChangeChangesNothing(_ change: Change, _ code: Int32) async throws {
        _ = try await walkSteps(change, arm: { $0.failStep(after: $1, errno: code) }) { step, error, before in
            #expect(error as? DesklineError == .storage("the store could not complete the operation; nothing was changed"), "step \(step)")
            #expect(snapshot().countersAside == before.countersAside, "step \(step) of \(change) left a change behind")
        }
        #expect(!FileManager.default.fileExists(atPath: root + "/accounts.pending"))
    }

    /// A refused create spends its number (the counter's increment is committed before the
    /// create): its files were visible meanwhile, and what refers to them is not the next one's.
    @Test func aRefusedCustomerSpendsItsIdAndKeepsItsEmailFree() async throws {
        let store = try await seeded()
        store.faults.failNext(.write, pathSuffix: "/customers/c2.json", errno: ENOSPC)
        await #expect(throws: DesklineError.storage("the store could not complete the operation; nothing was changed")) {
            try await store.createCustomer(NewCustomer(name: "Bob", email: "bob@x.test", phone: nil), in: acme, at: Date())
        }
        let bob = try await store.createCustomer(NewCustomer(name: "Bob", email: "bob@x.test", phone: nil), in: acme, at: Date())
        #expect(bob.id == CustomerID(rawValue: "c3")!)
        await #expect(throws: DesklineError.conflict("tenant acme already has a customer with email bob@x.test (c3)")) {
            try await store.createCustomer(NewCustomer(name: "Bob", email: "bob@x.test", phone: nil), in: acme, at: Date())
        }
    }

    /// The create of user `id` fails at its login index's directory sync (the index is already
    /// renamed into place), and the undo cannot remove the new user file.
    func failWithUndoFailing(_ store: FileStore, creating id: String) async throws {
        store.faults.failNext(.syncDirectory, pathSuffix: "/logins", errno: EIO)
        store.faults.failNext(.remove, pathSuffix: "/users/\(id).json", errno: EIO)
        await #expect(throws: DesklineError.storage("the store could not complete the operation; nothing was changed")) {
            try await store.createUser(NewUser(email: "al@x.test", displayName: "Al", role: .agent, passwordHash: hash, customerId: nil),
                                       in: acme, at: Date())
        }
    }

    @Test func anUndoThatFailsIsFinishedByTheNextAccountChange() async throws {
        let store = try await seeded()
        let before = snapshot()
        try await failWithUndoFailing(store, creating: "u3")
        // The undo did what it could: the login is gone again; the user file and the intent stay.
        // (Read as files: a read through the store would finish the undo.)
        #expect(!FileManager.default.fileExists(atPath: store.loginFile("al@x.test")))
        #expect(FileManager.default.fileExists(atPath: root + "/tenants/acme/users/u3.json"))
        let report = try await store.check(repair: false)
        #expect(report.problems.first?.hasPrefix("accounts.pending: an interrupted account change is not undone yet (tenants/acme/users/u3.json, logins/") == true,
                "\(report.problems)")
        // The next change undoes it first (the refused create's number stays spent).
        let al = try await store.createUser(NewUser(email: "al@x.test", displayName: "Al", role: .agent, passwordHash: hash, customerId: nil),
                                            in: acme, at: Date())
        #expect(al.id == UserID(rawValue: "u4")!)
        #expect(try await store.check(repair: false).problems == [])
        #expect(snapshot().count == before.count + 2)
    }

    @Test func theServerStartAndCheckRepairUndoAnInterruptedChange() async throws {
        let store = try await seeded()
        let before = snapshot()
        try await failWithUndoFailing(store, creating: "u3")
        // As the next server start finds it (another process: a new store).
        let server = try await FileStore(root: root)
        try await server.lockForServer(pid: 1).release(clean: true)
        #expect(snapshot().countersAside == before.countersAside)

        try await failWithUndoFailing(store, creating: "u4")
        let repair = try await FileStore(root: root)
        let lock = try await repair.lockForServer(pid: 2)
        let report = try await repair.check(repair: true)
        lock.release()
        #expect(report.problems == [])
        #expect(report.repaired.count == 1)
        #expect(report.repaired.first?.hasPrefix("accounts.pending: an interrupted account change was undone (tenants/acme/users/u4.json, logins/") == true)
        #expect(snapshot().countersAside == before.countersAside)
    }

    @Test func keptOldVersionsOutliveTheTempFileSweepAndAreRenamedBack() async throws {
        let store = try await seeded()
        let counters = root + "/tenants/acme/counters.json"
        let old = try #require(FileManager.default.contents(atPath: counters))
        // The counters' replace fails at its rename, and so does the undo's rename back.
        store.faults.failNext(.rename, pathSuffix: "/counters.json", errno: EIO)
        store.faults.failNext(.rename, pathSuffix: "/counters.json", errno: EIO)
        await #expect(throws: DesklineError.self) {
            try await store.createCustomer(NewCustomer(name: "Bob", email: "bob@x.test", phone: nil), in: acme, at: Date())
        }
        #expect(FileManager.default.fileExists(atPath: counters + ".before"))
        // Recovery after an unclean stop sweeps temp files: not the kept version.
        store.sweepTemporaryFiles(in: root + "/tenants/acme")
        #expect(FileManager.default.fileExists(atPath: counters + ".before"))
        #expect(FileManager.default.fileExists(atPath: root + "/accounts.pending"))
        try await FileStore(root: root).lockForServer(pid: 1).release()
        #expect(!FileManager.default.fileExists(atPath: counters + ".before"))
        #expect(!FileManager.default.fileExists(atPath: root + "/accounts.pending"))
        #expect(FileManager.default.contents(atPath: counters) == old)
    }

    @Test func aKeptVersionLeftByACommittedChangeIsNeverRenamedBack() async throws {
        let store = try await seeded()
        let counters = root + "/tenants/acme/counters.json"
        let current = try #require(FileManager.default.contents(atPath: counters))
        // A committed change's kept version whose removal a crash undid ...
        try Data(#"{"customer": 0, "user": 0}"#.utf8).write(to: URL(fileURLWithPath: counters + ".before"))
        #expect(try await store.check(repair: false).problems == [
            "\(root)/tenants/acme/counters.json.before: old version kept by an account change that was committed (a leftover)",
        ])
        // ... and then a later change that was interrupted before it reached the counters.
        let intent = AccountTransaction.Intent(directories: [], files: [
            .init(path: "tenants/acme/counters.json", inode: try AccountTransaction.inode(counters)),
            .init(path: "tenants/acme/customers/c9.json", inode: nil),
        ])
        try JSONEncoder().encode(intent).write(to: URL(fileURLWithPath: root + "/accounts.pending"))
        try Data("{}".utf8).write(to: URL(fileURLWithPath: root + "/tenants/acme/customers/c9.json"))
        let bob = try await store.createCustomer(NewCustomer(name: "Bob", email: "bob@x.test", phone: nil), in: acme, at: Date())
        // The counters were not rolled back to the leftover's: ids stay unique.
        #expect(bob.id == CustomerID(rawValue: "c2")!)
        #expect(current != FileManager.default.contents(atPath: counters))
        #expect(!FileManager.default.fileExists(atPath: root + "/tenants/acme/customers/c9.json"))
        #expect(try await store.check(repair: false).problems == [])
    }
}

extension AccountTransactionTests {
    /// The process dies at any step of a change (every step from there on fails, so nothing more
    /// changes, the undo included): the next server start puts back exactly what was there.
    @Test(arguments: Change.allCases)
    func aChangeInterruptedAtAnyStepIsUndoneByTheNextStart(_ change: Change) async throws {
        _ = try await walkSteps(change, arm: { $0.failSteps(after: $1) }) { step, _, before in
            let store = try await FileStore(root: root)
            // A plain check sees the interrupted change (once its intent was written).
            let pending = try await store.check(repair: false).problems.contains { $0.hasPrefix("accounts.pending: an interrupted account change is not undone yet") }
            #expect(pending == FileManager.default.fileExists(atPath: root + "/accounts.pending"), "step \(step)")
            try await store.lockForServer(pid: 1).release(clean: true)
            #expect(snapshot().countersAside == before.countersAside, "\(change) interrupted at step \(step) was not undone")
        }
    }
}

extension AccountTransactionTests {
    /// A refused user create spends its number: the server may have notified the user, or an
    /// admin assigned it a ticket, in the moment the undone create showed it.
    @Test func aRefusedUserCreateSpendsItsNumber() async throws {
        let store = try await seeded()
        store.faults.failNext(.write, pathSuffix: "/users/u3.json", errno: ENOSPC)
        await #expect(throws: DesklineError.self) {
            try await store.createUser(NewUser(email: "al@x.test", displayName: "Al", role: .agent, passwordHash: hash, customerId: nil),
                                       in: acme, at: Date())
        }
        #expect(!FileManager.default.fileExists(atPath: root + "/tenants/acme/users/u3.json"))
        let al = try await store.createUser(NewUser(email: "al@x.test", displayName: "Al", role: .agent, passwordHash: hash, customerId: nil),
                                            in: acme, at: Date())
        #expect(al.id == UserID(rawValue: "u4")!)
        #expect(try await store.check(repair: false).problems == [])
    }
}

extension [String: Data] {
    /// Without the tenants' id counters: a refused create spends its number.
    var countersAside: Self { filter { !$0.key.hasSuffix("/counters.json") } }
}

/// Runs password work inline (the test cost is about a millisecond).
struct InlinePasswordWork: BlockingExecutor {
    func run<T: Sendable>(_ work: @escaping @Sendable () throws(DesklineError) -> T) async throws(DesklineError) -> T { try work() }
}

extension AccountTransactionTests {
    /// The admin CLI dies at any step of a change (so its undo never runs) while a server runs:
    /// the server's LOGIN does not take the unfinished change's files for the accounts (no login
    /// for the new user, none with the new password); its reads undo the change first, as the
    /// next account change would, so it is never undone later, after a login used it.
    @Test(arguments: [Change.agent, .password])
    func loginUndoesAChangeAnotherProcessLeftUnfinished(_ change: Change) async throws {
        _ = try await walkSteps(change, arm: { $0.failSteps(after: $1) }) { step, _, before in
            let server = AccountService(store: try await FileStore(root: root), hasher: Self.hasher, passwordWork: InlinePasswordWork())
            let login = change == .agent ? "acme/al@x.test" : "acme/ann@x.test"
            await #expect(throws: DesklineError.loginFailed, "step \(step)") {
                try await server.login(login, password: "new password")
            }
            #expect(snapshot().countersAside == before.countersAside, "\(change) interrupted at step \(step) was not undone by LOGIN")
            _ = try await server.login("acme/ann@x.test", password: "old password")
        }
    }
}

extension AccountTransactionTests {
    /// The commit's last step, the sync of the data directory after `accounts.pending` was removed,
    /// fails: the intent is written again before the undo (so an undo that fails as well is
    /// finished later); if that fails too, the change is kept whole and not undone without its
    /// intent, which a failing undo could leave half done with nothing to finish it.
    @Test func aCommitWhoseLastSyncFailsIsUndoneOnlyUnderItsIntent() async throws {
        let store = try await seeded()
        let before = snapshot()
        let user = root + "/tenants/acme/users/u1.json"
        // The root's second sync is the commit's (the first, the intent's own write); the undo's
        // rename of the kept version back fails (the first rename of the file is its replace).
        store.faults.failNext(.syncDirectory, pathSuffix: root, errno: EIO, skipping: 1)
        store.faults.failNext(.rename, pathSuffix: "/users/u1.json", errno: EIO, skipping: 1)
        await #expect(throws: DesklineError.self) { try await make(.password, store) }
        #expect(FileManager.default.fileExists(atPath: root + "/accounts.pending"))
        try await FileStore(root: root).lockForServer(pid: 1).release(clean: true)
        #expect(snapshot() == before)

        // The intent cannot be written again (its second write; the first is the change's own).
        store.faults.failNext(.syncDirectory, pathSuffix: root, errno: EIO, skipping: 1)
        store.faults.failNext(.write, pathSuffix: "/accounts.pending", errno: ENOSPC, skipping: 1)
        await #expect(throws: DesklineError.storage(AccountTransaction.keptWhole)) { try await make(.password, store) }
        #expect(!FileManager.default.fileExists(atPath: root + "/accounts.pending"))
        #expect(try await store.storedUser(UserID(rawValue: "u1")!, in: acme)?.passwordHash == newHash)
        #expect(!FileManager.default.fileExists(atPath: user + ".before"))
        #expect(try await store.check(repair: false).problems == [])
    }
}

extension AccountTransactionTests {
    /// While an interrupted change is pending (here one whose intent cannot be read, so it cannot
    /// be undone), `check --repair` makes no account repair outside a transaction: a later undo
    /// could remove a login index file it wrote. It reports them.
    @Test func checkRepairLeavesAccountFilesAloneWhileAChangeIsPending() async throws {
        let store = try await seeded()
        let login = store.loginFile("amy@x.test")
        try FileManager.default.removeItem(atPath: login)
        try FileManager.default.createDirectory(atPath: root + "/tenants/globex/users", withIntermediateDirectories: true)
        try Data("{".utf8).write(to: URL(fileURLWithPath: root + "/accounts.pending"))
        let report = try await store.check(repair: true)
        #expect(report.repaired == [])
        #expect(report.problems.contains("login index for amy@x.test does not match the users"), "\(report.problems)")
        #expect(report.problems.contains { $0.hasPrefix("\(root)/tenants/globex: a `tenant add` that never finished") }, "\(report.problems)")
        #expect(!FileManager.default.fileExists(atPath: login))
        #expect(DurableFile.isDirectory(root + "/tenants/globex"))
    }
}
