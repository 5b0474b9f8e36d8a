import DesklineCore
@testable import DesklineStore
import Foundation
import Testing

struct FileStoreTests {
    let root = NSTemporaryDirectory() + "deskline-store-" + UUID().uuidString

    func tenant(_ id: String) -> Tenant {
        Tenant(id: TenantID(rawValue: id)!, name: id.uppercased(), createdAt: Date(timeIntervalSince1970: 1_700_000_000))
    }

    func files(under path: String) -> [String] {
        (FileManager.default.enumerator(atPath: path)?.allObjects as? [String]) ?? []
    }

    @Test func atomicWritesLeaveNoTempFiles() async throws {
        let store = try await FileStore(root: root)
        try await store.createTenant(tenant("acme"))
        for i in 0..<20 {
            _ = try await store.createCustomer(NewCustomer(name: "C\(i)", email: "c\(i)@x.test", phone: nil),
                                               in: TenantID(rawValue: "acme")!, at: Date())
        }
        let leftovers = files(under: root).filter { ($0 as NSString).lastPathComponent.hasPrefix(DurableFile.tempPrefix) }
        #expect(leftovers.isEmpty)
        #expect(files(under: root + "/tenants/acme/customers").count == 20)
    }

    @Test func replaceSwapsTheWholeFile() throws {
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let path = root + "/doc.json"
        try DurableFile.replace(path, with: Data("first version, longer".utf8))
        try DurableFile.replace(path, with: Data("second".utf8))
        #expect(try DurableFile.read(path) == Data("second".utf8))
        #expect(try DurableFile.read(root + "/missing.json") == nil)
    }

    @Test func leftoverTempFilesAreRemovedByTheSweep() async throws {
        let store = try await FileStore(root: root)
        try await store.createTenant(tenant("acme"))
        let stray = root + "/tenants/acme/users/" + DurableFile.tempPrefix + "u1.json-abc"
        #expect(FileManager.default.createFile(atPath: stray, contents: Data("{\"half".utf8)))
        // Opening does not touch them (the CLI opens stores while a server may be writing) ...
        let reopened = try await FileStore(root: root)
        #expect(FileManager.default.fileExists(atPath: stray))
        // ... `check --repair` (under the account lock) does.
        _ = try await reopened.check(repair: true)
        #expect(!FileManager.default.fileExists(atPath: stray))
    }

    @Test func dataSurvivesReopening() async throws {
        let store = try await FileStore(root: root)
        try await store.createTenant(tenant("acme"))
        let acme = TenantID(rawValue: "acme")!
        let c = try await store.createCustomer(NewCustomer(name: "Ann", email: "ann@x.test", phone: "123"), in: acme, at: Date())
        let reopened = try await FileStore(root: root)
        #expect(try await reopened.customer(c.id, in: acme) == c)
        #expect(try await reopened.tenants().map(\.id) == [acme])
    }

    @Test func duplicateTenantIsAConflict() async throws {
        let store = try await FileStore(root: root)
        try await store.createTenant(tenant("acme"))
        await #expect(throws: DesklineError.conflict("tenant acme already exists")) {
            try await store.createTenant(tenant("acme"))
        }
    }

    @Test func concurrentCreatesGetDistinctIds() async throws {
        let store = try await FileStore(root: root)
        try await store.createTenant(tenant("acme"))
        let acme = TenantID(rawValue: "acme")!
        let ids = try await withThrowingTaskGroup(of: CustomerID.self) { group in
            for i in 0..<40 {
                group.addTask {
                    try await store.createCustomer(NewCustomer(name: "C\(i)", email: "c\(i)@x.test", phone: nil), in: acme, at: Date()).id
                }
            }
            return try await group.reduce(into: Set<CustomerID>()) { $0.insert($1) }
        }
        #expect(ids.count == 40)
    }

    @Test func aSecondServerCannotLockTheSameDirectory() async throws {
        let store = try await FileStore(root: root)
        let lock = try await store.lockForServer(pid: 4242)
        #expect(await store.isServerRunning())
        await #expect(throws: DesklineError.conflict("another Deskline server is already using the data directory \(store.root) (pid 4242)")) {
            try await store.lockForServer(pid: 4343)
        }
        lock.release()
        #expect(!(await store.isServerRunning()))
        try await store.lockForServer(pid: 4343).release()
    }

    @Test func corruptFilesAreReportedNotTrusted() async throws {
        let store = try await FileStore(root: root)
        try await store.createTenant(tenant("acme"))
        try Data("{ not json".utf8).write(to: URL(fileURLWithPath: root + "/tenants/acme/tenant.json"))
        // The client-facing text names no path and no parser detail; those go to the log.
        await #expect(throws: DesklineError.storage("stored data is damaged; the operator has been told in the server log")) {
            try await store.tenant(TenantID(rawValue: "acme")!)
        }
    }
}

struct TimestampTests {
    @Test func roundTripsExactlyAtMillisecondPrecision() {
        for t in [0.0, 1_795_618_463.395, 1_795_618_463.999, 1_700_000_000.001, Date().timeIntervalSince1970] {
            let truncated = Timestamp.truncate(Date(timeIntervalSince1970: t))
            #expect(Timestamp.parse(Timestamp.format(truncated)) == truncated, "\(t)")
        }
        #expect(Timestamp.format(Date(timeIntervalSince1970: 1_795_618_463.395)) == "2026-11-25T14:54:23.395Z")
        #expect(Timestamp.parse("2026-11-25T14:54:23Z") == Date(timeIntervalSince1970: 1_795_618_463))
        #expect(Timestamp.parse("yesterday") == nil)
    }
}

extension FileStoreTests {
    @Test func customerEmailsAreUniqueWithinATenant() async throws {
        let store = try await FileStore(root: root)
        try await store.createTenant(tenant("acme"))
        try await store.createTenant(tenant("globex"))
        let acme = TenantID(rawValue: "acme")!
        _ = try await store.createCustomer(NewCustomer(name: "Ann", email: "ann@x.test", phone: nil), in: acme, at: Date())
        await #expect(throws: DesklineError.conflict("tenant acme already has a customer with email ann@x.test (c1)")) {
            try await store.createCustomer(NewCustomer(name: "Ann 2", email: "ann@x.test", phone: nil), in: acme, at: Date())
        }
        _ = try await store.createCustomer(NewCustomer(name: "Ann", email: "ann@x.test", phone: nil), in: TenantID(rawValue: "globex")!, at: Date())
    }
}

extension FileStoreTests {
    @Test func aCustomerRecordHasAtMostOneLogin() async throws {
        let store = try await FileStore(root: root)
        try await store.createTenant(tenant("acme"))
        let acme = TenantID(rawValue: "acme")!
        let c = try await store.createCustomer(NewCustomer(name: "Ann", email: "ann@x.test", phone: nil), in: acme, at: Date())
        let hash = PasswordHash(algorithm: "scrypt", n: 1024, r: 8, p: 1, salt: "", hash: "")
        _ = try await store.createUser(NewUser(email: "ann@x.test", displayName: "Ann", role: .customer, passwordHash: hash, customerId: c.id),
                                       in: acme, at: Date())
        // Even with another email, the store refuses a second login for the same record.
        await #expect(throws: DesklineError.conflict("customer c1 already has a login (user u1)")) {
            try await store.createUser(NewUser(email: "other@x.test", displayName: "Ann", role: .customer, passwordHash: hash, customerId: c.id),
                                       in: acme, at: Date())
        }
    }
}

extension FileStoreTests {
    @Test func aTornLastLogLineIsSkipped() async throws {
        let store = try await FileStore(root: root)
        try await store.createTenant(tenant("acme"))
        let acme = TenantID(rawValue: "acme")!
        let c = try await store.createCustomer(NewCustomer(name: "Ann", email: "ann@x.test", phone: nil), in: acme, at: Date())
        let t = try await store.openTicket(customer: c.id, subject: "s", in: acme, at: Date())
        let draft = TicketEntryDraft(kind: .message, authorId: UserID(rawValue: "u1")!, authorName: "Ann", authorRole: .customer, text: "kept")
        _ = try await store.appendEntry(draft, to: t.id, in: acme, at: Date()) { _ in }
        // A crash in the middle of an append leaves half a line without its newline (longer than
        // the next line: written over instead of cut, some of it would stay).
        let log = FileHandle(forWritingAtPath: root + "/tenants/acme/tickets/1001.jsonl")!
        log.seekToEndOfFile()
        log.write(Data(#"{"at":"2026-11-25T15:00:00.000Z","authorId":"u1","text":""#.utf8 + Data(repeating: UInt8(ascii: "x"), count: 600)))
        try log.close()
        let entries = try await store.entries(of: t.id, in: acme, after: nil, before: nil, limit: 10, includeNotes: true)
        #expect(entries.map(\.text) == ["kept"])
        // The next append cuts the torn remains first, so the log stays readable.
        let next = TicketEntryDraft(kind: .message, authorId: UserID(rawValue: "u1")!, authorName: "Ann", authorRole: .customer, text: "after the crash")
        _ = try await store.appendEntry(next, to: t.id, in: acme, at: Date()) { _ in }
        let repaired = try await store.entries(of: t.id, in: acme, after: nil, before: nil, limit: 10, includeNotes: true)
        #expect(repaired.map(\.text) == ["kept", "after the crash"])
        #expect(repaired.map(\.seq) == [1, 2])
        // Cut, not written over: nothing of the torn line is left.
        let raw = try String(contentsOfFile: root + "/tenants/acme/tickets/1001.jsonl", encoding: .utf8)
        #expect(!raw.contains("xxx") && raw.hasSuffix("\n"))
    }

    @Test func theUserListSeesEveryChangeAtOnce() async throws {
        let store = try await FileStore(root: root)
        let acme = TenantID(rawValue: "acme")!
        try await store.createTenant(tenant("acme"))
        let hash = PasswordHash(algorithm: "scrypt", n: 1024, r: 8, p: 1, salt: "", hash: "")
        // Changes right after a reading (within one tick of the file system's clock) and long
        // after it (an aged directory mtime, as on a server that has run a while) both show.
        for (i, aged) in [false, false, true, true].enumerated() {
            if aged {
                let old = Date(timeIntervalSinceNow: -60)
                try FileManager.default.setAttributes([.modificationDate: old], ofItemAtPath: root + "/tenants/acme/users")
                _ = try await store.users(in: acme)
            }
            _ = try await store.createUser(NewUser(email: "a\(i)@x.test", displayName: "A", role: .agent, passwordHash: hash, customerId: nil),
                                           in: acme, at: Date())
            #expect(try await store.users(in: acme).count == i + 1)
        }
        // A replaced user file (a new password) is seen too.
        let newHash = PasswordHash(algorithm: "scrypt", n: 2048, r: 8, p: 1, salt: "", hash: "")
        try await store.setPasswordHash(newHash, for: UserID(rawValue: "u1")!, in: acme, ifCurrent: nil)
        #expect(try await store.users(in: acme).first { $0.id.rawValue == "u1" }?.passwordHash == newHash)
    }

    @Test func rightAfterAChangeTheUserListIsReadOncePerSecondNotForEveryEvent() async throws {
        let store = try await FileStore(root: root)
        let acme = TenantID(rawValue: "acme")!
        try await store.createTenant(tenant("acme"))
        let hash = PasswordHash(algorithm: "scrypt", n: 1024, r: 8, p: 1, salt: "", hash: "")
        func user(_ n: Int) -> NewUser { NewUser(email: "a\(n)@x.test", displayName: "A", role: .agent, passwordHash: hash, customerId: nil) }
        _ = try await store.createUser(user(0), in: acme, at: Date())
        // The directory's mtime is seconds old at most: a "racy" reading, kept for a second. (The
        // mtime is set a minute ahead so that the reading is racy however slow the machine is:
        // one taken more than 2 s after the change would rightly be trusted, and then the CLI's
        // change below, with the mtime put back, could not be seen.)
        let dir = root + "/tenants/acme/users"
        var ahead = [timespec(tv_sec: time(nil) + 60, tv_nsec: 0), timespec(tv_sec: time(nil) + 60, tv_nsec: 0)]
        #expect(utimensat(AT_FDCWD, dir, &ahead, 0) == 0)
        let reads = store.userListReads.load(ordering: .relaxed)
        let started = ContinuousClock.now
        for _ in 0..<50 { #expect(try await store.users(in: acme).count == 1) }
        // A kept reading is checked again after a second: one reading for each second the 50
        // calls spanned, and one for a second boundary they crossed (on CI's loaded machine they
        // once took more than a second). Reading for every call would be 50.
        let seconds = Int((ContinuousClock.now - started).components.seconds)
        #expect(store.userListReads.load(ordering: .relaxed) - reads <= 2 + seconds)

        // Another process (the admin CLI) adds a user within the same tick of the file system's
        // clock: the directory keeps the mtime of the kept reading. That reading is still not
        // trusted past its second.
        var info = stat()
        #expect(stat(dir, &info) == 0)
        let cli = try await FileStore(root: root)
        _ = try await cli.createUser(user(1), in: acme, at: Date())
        var times = [info.st_atim, info.st_mtim]
        #expect(utimensat(AT_FDCWD, dir, &times, 0) == 0)
        var seen = try await store.users(in: acme).count
        // (A generous deadline: a loaded machine, such as CI's while the PostgreSQL tests fill
        // their tables, once took longer than 5 s.)
        let deadline = ContinuousClock.now + .seconds(30)
        while seen < 2, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
            seen = try await store.users(in: acme).count
        }
        #expect(seen == 2)
    }

    @Test func callersThatMissTheUserListAtOnceShareOneReading() async throws {
        // The first messages after a start all ask for the tenant's staff at once: one reading of
        // the users directory serves them all.
        let store = try await FileStore(root: root)
        let acme = TenantID(rawValue: "acme")!
        try await store.createTenant(tenant("acme"))
        let hash = PasswordHash(algorithm: "scrypt", n: 1024, r: 8, p: 1, salt: "", hash: "")
        for n in 0..<200 {
            _ = try await store.createUser(NewUser(email: "a\(n)@x.test", displayName: "A", role: n < 20 ? .agent : .admin,
                                                   passwordHash: hash, customerId: nil), in: acme, at: Date())
        }
        store.usersChanged(acme)
        let reads = store.userListReads.load(ordering: .relaxed)
        let counts = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<32 { group.addTask { try await store.staff(in: acme).agents.count } }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(counts == Array(repeating: 20, count: 32))
        #expect(store.userListReads.load(ordering: .relaxed) - reads == 1)
        // A change made meanwhile is not hidden by a reading that began before it.
        _ = try await store.createUser(NewUser(email: "late@x.test", displayName: "L", role: .agent, passwordHash: hash, customerId: nil),
                                       in: acme, at: Date())
        #expect(try await store.staff(in: acme).agents.count == 21)
    }

    @Test func appendingDoesNotRewriteTheLog() async throws {
        let store = try await FileStore(root: root)
        try await store.createTenant(tenant("acme"))
        let acme = TenantID(rawValue: "acme")!
        let c = try await store.createCustomer(NewCustomer(name: "Ann", email: "ann@x.test", phone: nil), in: acme, at: Date())
        let t = try await store.openTicket(customer: c.id, subject: "s", in: acme, at: Date())
        let draft = TicketEntryDraft(kind: .message, authorId: UserID(rawValue: "u1")!, authorName: "Ann", authorRole: .customer, text: "x")
        _ = try await store.appendEntry(draft, to: t.id, in: acme, at: Date()) { _ in }
        let path = root + "/tenants/acme/tickets/1001.jsonl"
        let inode = try FileManager.default.attributesOfItem(atPath: path)[.systemFileNumber] as? Int
        for _ in 0..<5 { _ = try await store.appendEntry(draft, to: t.id, in: acme, at: Date()) { _ in } }
        // Same file (appended in place, not replaced): the creation line and one line per entry.
        #expect(try FileManager.default.attributesOfItem(atPath: path)[.systemFileNumber] as? Int == inode)
        #expect(try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").count == 7)
    }
}

struct FileStoreCheckTests {
    let root = NSTemporaryDirectory() + "deskline-check-" + UUID().uuidString

    /// Puts a notification about ticket `id` in `user`'s inbox.
    func notify(_ store: FileStore, _ user: UserID, about id: TicketID) async throws {
        let notification = DesklineCore.Notification(id: 0, type: "new", ticket: id, call: nil, actorName: "Ann", text: "s", at: Date())
        _ = try await store.changeTicket(id, in: TenantID(rawValue: "acme")!) { state in
            Change(ticket: state.ticket, inbox: InboxDelivery(notification: notification, users: [user]))
        }
    }

    func seeded() async throws -> FileStore {
        let store = try await FileStore(root: root)
        let acme = TenantID(rawValue: "acme")!
        try await store.createTenant(Tenant(id: acme, name: "Acme", createdAt: Date()))
        let c = try await store.createCustomer(NewCustomer(name: "Ann", email: "ann@x.test", phone: nil), in: acme, at: Date())
        let hash = PasswordHash(algorithm: "scrypt", n: 1024, r: 8, p: 1, salt: "", hash: "")
        let u = try await store.createUser(NewUser(email: "ann@x.test", displayName: "Ann", role: .customer, passwordHash: hash, customerId: c.id), in: acme, at: Date())
        let t = try await store.openTicket(customer: c.id, subject: "s", in: acme, at: Date())
        let draft = TicketEntryDraft(kind: .message, authorId: u.id, authorName: "Ann", authorRole: .customer, text: "hi")
        _ = try await store.appendEntry(draft, to: t.id, in: acme, at: Date()) { _ in }
        _ = try await store.fileCall(in: acme) { id in
            Change(call: CallRequest.filed(id, in: acme, by: c.id, about: t.id, phone: "+1 555 0100", note: nil, at: Date()))
        }
        try await notify(store, u.id, about: t.id)
        return store
    }

    @Test func aConsistentStoreIsClean() async throws {
        let report = try await seeded().check(repair: false)
        #expect(report.problems == [])
        #expect(report.counts == ["tenants": 1, "users": 1, "customers": 1, "tickets": 1, "entries": 1, "calls": 1, "events": 2, "notifications": 1, "logins": 1])
    }

    @Test func damageIsFoundAndWhatCanBeDerivedIsRepaired() async throws {
        let store = try await seeded()
        let t = root + "/tenants/acme"
        // A torn log tail, a lost login index, a stale customer index, a leftover temp file,
        // and a ticket log whose first write never finished.
        let log = FileHandle(forWritingAtPath: t + "/tickets/1001.jsonl")!
        log.seekToEndOfFile()
        log.write(Data(#"{"seq":2,"te"#.utf8))
        try log.close()
        for f in try FileManager.default.contentsOfDirectory(atPath: root + "/logins") { try FileManager.default.removeItem(atPath: root + "/logins/" + f) }
        try Data().write(to: URL(fileURLWithPath: t + "/customer-tickets/c1.jsonl"))
        #expect(FileManager.default.createFile(atPath: t + "/users/.tmp-u1.json-x", contents: Data("{".utf8)))
        try Data().write(to: URL(fileURLWithPath: t + "/tickets/1002.jsonl"))

        let found = try await store.check(repair: false)
        #expect(found.problems.count == 5, "\(found.problems)")
        let repaired = try await store.check(repair: true)
        #expect(repaired.problems == [])
        #expect(repaired.repaired.count == 5)
        #expect(try await store.check(repair: false).problems == [])
        // The repaired store works: the login index finds Ann again, the index lists her ticket,
        // and the next ticket takes the number the unfinished one could not keep.
        let acme = TenantID(rawValue: "acme")!
        #expect(try await store.accounts(withEmail: "ann@x.test").map(\.userId) == [UserID(rawValue: "u1")!])
        #expect(try await store.ticketIDs(ofCustomer: CustomerID(rawValue: "c1")!, in: acme) == [TicketID(1001)])
        #expect(try await store.unreadNotificationCount(of: UserID(rawValue: "u1")!, in: acme) == 1)
        let next = try await FileStore(root: root).openTicket(customer: CustomerID(rawValue: "c1")!, subject: "again", in: acme, at: Date())
        #expect(next.id == TicketID(1002))
    }

    @Test func aTicketLogWhoseLinesGoBackIsReported() async throws {
        let store = try await seeded()
        let acme = TenantID(rawValue: "acme")!
        let path = root + "/tenants/acme/tickets/1001.jsonl"
        // An assignment that counts 5 entries, then entry 2: HISTORY's search would miss entry 2.
        var ticket = try #require(try await store.ticket(TicketID(1001), in: acme))
        ticket.lastSeq = 5
        var lines = JSONLine.line(TicketLogLine(ticket: ticket, entry: nil))
        ticket.lastSeq = 2
        lines += JSONLine.line(TicketLogLine(ticket: ticket, entry: TicketEntry(seq: 2, kind: .message, authorId: UserID(rawValue: "u1")!,
                                                                                 authorName: "Ann", authorRole: .customer, text: "two", at: Date())))
        let log = try #require(FileHandle(forWritingAtPath: path))
        log.seekToEndOfFile()
        log.write(lines)
        try log.close()
        #expect(try await store.check(repair: false).problems == [store.root + "/tenants/acme/tickets/1001.jsonl: a line stands before an earlier one (its entry, or the counts of a line without one)"])
    }

    @Test func brokenLinksAreReportedNotGuessed() async throws {
        let store = try await seeded()
        // A second login names c1, which links to u1 (and u1 back): which one it keeps is a decision.
        let hash = PasswordHash(algorithm: "scrypt", n: 1024, r: 8, p: 1, salt: "", hash: "")
        try store.save(User(id: UserID(rawValue: "u2")!, tenantId: TenantID(rawValue: "acme")!, email: "other@x.test", displayName: "Ann",
                            role: .customer, passwordHash: hash, customerId: CustomerID(rawValue: "c1")!, createdAt: Date()),
                       root + "/tenants/acme/users/u2.json")
        let report = try await store.check(repair: true)
        #expect(report.problems == ["user acme/u2 names customer c1, which does not link back (customer c1 links to user u1): a person must decide which login the customer keeps"])
    }
}

/// What the account writes before they were all or nothing could leave on a full disk, and what
/// `check --repair` does with it (issue #16).
extension FileStoreCheckTests {
    var acme: TenantID { TenantID(rawValue: "acme")! }
    var hash: PasswordHash { PasswordHash(algorithm: "scrypt", n: 1024, r: 8, p: 1, salt: "", hash: "") }

    /// A customer record a refused `customer add` left behind: its file and the counter, not its
    /// email index (then `customer add` with the same email, which got through, made c2).
    func customerWithoutIndex() async throws -> FileStore {
        let store = try await FileStore(root: root)
        try await store.createTenant(Tenant(id: acme, name: "Acme", createdAt: Date()))
        try store.save(Customer(id: CustomerID(rawValue: "c1")!, tenantId: acme, name: "Ann", email: "ann@x.test", phone: nil, createdAt: Date()),
                       root + "/tenants/acme/customers/c1.json")
        try Data(#"{"customer": 1, "user": 0}"#.utf8).write(to: URL(fileURLWithPath: root + "/tenants/acme/counters.json"))
        #expect(try await store.createCustomer(NewCustomer(name: "Ann", email: "ann@x.test", phone: nil), in: acme, at: Date()).id.rawValue == "c2")
        return store
    }

    @Test func aCustomerWhoseCreateFailedIsRemovedOnceALaterOneHasItsEmail() async throws {
        let store = try await customerWithoutIndex()
        let expected = #"customers acme/c1, acme/c2 share the email ann@x.test: acme/c1 "Ann" (0 tickets, 0 calls, no login) never had its create acknowledged (a later customer with the email could be created only because it failed) and nothing refers to it; repair removes it and keeps acme/c2"#
        #expect(try await store.check(repair: false).problems == [expected])
        let repaired = try await store.check(repair: true)
        #expect(repaired.repaired == [expected] && repaired.problems == [])
        #expect(try await store.check(repair: false).problems == [])
        #expect(try await store.customer(CustomerID(rawValue: "c1")!, in: acme) == nil)
        await #expect(throws: DesklineError.conflict("tenant acme already has a customer with email ann@x.test (c2)")) {
            try await store.createCustomer(NewCustomer(name: "Ann", email: "ann@x.test", phone: nil), in: acme, at: Date())
        }
    }

    @Test func customersInUseThatShareAnEmailAreLeftToAPerson() async throws {
        let store = try await customerWithoutIndex()
        _ = try await store.openTicket(customer: CustomerID(rawValue: "c1")!, subject: "s", in: acme, at: Date())
        // The email index gone as well: repair points it at the newest, so no third customer gets the email.
        for name in try FileManager.default.contentsOfDirectory(atPath: root + "/tenants/acme/customer-emails") {
            try FileManager.default.removeItem(atPath: root + "/tenants/acme/customer-emails/" + name)
        }
        let decision = #"customers acme/c1, acme/c2 share the email ann@x.test, and more than the newest is in use: acme/c1 "Ann" (1 ticket, 0 calls, no login); acme/c2 "Ann" (0 tickets, 0 calls, no login). A person must decide which record keeps the email (only acme/c2 can have been acknowledged by `customer add`); Deskline has no command that merges or removes customers, so with the server stopped edit or remove the other's files, then run `deskline check --repair`"#
        let index = "customer-email index of ann@x.test in acme names none of acme/c1, acme/c2"
        #expect(try await store.check(repair: false).problems == [decision, index])
        let repaired = try await store.check(repair: true)
        #expect(repaired.problems == [decision] && repaired.repaired == [index])
        // Stable: the next check finds the same, and changes nothing.
        #expect(try await store.check(repair: true).problems == [decision])
        #expect(try await store.customer(CustomerID(rawValue: "c1")!, in: acme) != nil)
        await #expect(throws: DesklineError.conflict("tenant acme already has a customer with email ann@x.test (c2)")) {
            try await store.createCustomer(NewCustomer(name: "Ann", email: "ann@x.test", phone: nil), in: acme, at: Date())
        }
    }

    /// A refused `user add --customer c1`: the user file and the counter, not the back-link nor the login index.
    func loginWithoutBackLink() async throws -> FileStore {
        let store = try await FileStore(root: root)
        try await store.createTenant(Tenant(id: acme, name: "Acme", createdAt: Date()))
        _ = try await store.createCustomer(NewCustomer(name: "Ann", email: "ann@x.test", phone: nil), in: acme, at: Date())
        try store.save(User(id: UserID(rawValue: "u1")!, tenantId: acme, email: "ann@x.test", displayName: "Ann", role: .customer,
                            passwordHash: hash, customerId: CustomerID(rawValue: "c1")!, createdAt: Date()),
                       root + "/tenants/acme/users/u1.json")
        try Data(#"{"customer": 1, "user": 1}"#.utf8).write(to: URL(fileURLWithPath: root + "/tenants/acme/counters.json"))
        return store
    }

    /// Never acknowledged and unused: linking it back would make a login live whose password
    /// nobody was given, so it goes (the customer can be given a login again).
    @Test func anUnusedLoginWhoseCreateStoppedBeforeTheBackLinkIsRemoved() async throws {
        let store = try await loginWithoutBackLink()
        let expected = ["user acme/u1 names customer c1, which does not link back (a login whose create was interrupted, never acknowledged, and nothing refers to it); repair removes it"]
        #expect(try await store.check(repair: false).problems == expected)
        #expect(try await store.check(repair: true).repaired == expected)
        #expect(try await store.check(repair: false).problems == [])
        #expect(try await store.user(UserID(rawValue: "u1")!, in: acme) == nil)
        #expect(try await store.customer(CustomerID(rawValue: "c1")!, in: acme)?.userId == nil)
        #expect(try await store.accounts(withEmail: "ann@x.test") == [])
    }

    @Test func aLoginInUseWhoseCreateStoppedBeforeTheBackLinkIsCompleted() async throws {
        let store = try await loginWithoutBackLink()
        let t = try await store.openTicket(customer: CustomerID(rawValue: "c1")!, subject: "s", in: acme, at: Date())
        try await notify(store, UserID(rawValue: "u1")!, about: t.id)
        let expected = ["user acme/u1 names customer c1, which does not link back (a login whose create was interrupted, since put to use); repair links it back",
                        "login index for ann@x.test does not match the users"]
        #expect(try await store.check(repair: false).problems == expected)
        #expect(try await store.check(repair: true).repaired == expected)
        #expect(try await store.check(repair: false).problems == [])
        #expect(try await store.customer(CustomerID(rawValue: "c1")!, in: acme)?.userId == UserID(rawValue: "u1")!)
        #expect(try await store.accounts(withEmail: "ann@x.test") == [AccountRef(tenantId: acme, userId: UserID(rawValue: "u1")!)])
    }

    @Test func aLoginWhoseCreateFailedIsRemovedOnceALaterOneHasItsEmail() async throws {
        let store = try await loginWithoutBackLink()
        // The retry got through (u2, linked and indexed); an earlier `check --repair` had put u1 in the login index too.
        _ = try await store.createUser(NewUser(email: "ann@x.test", displayName: "Ann", role: .customer, passwordHash: hash,
                                               customerId: CustomerID(rawValue: "c1")!), in: acme, at: Date())
        try store.save([AccountRef(tenantId: acme, userId: UserID(rawValue: "u1")!), AccountRef(tenantId: acme, userId: UserID(rawValue: "u2")!)],
                       store.loginFile("ann@x.test"))
        let expected = [#"users acme/u1, acme/u2 share the login email ann@x.test: acme/u1 "Ann" (customer) never had its create acknowledged and nothing refers to it; repair removes it and keeps acme/u2"#,
                        "login index for ann@x.test does not match the users"]
        #expect(try await store.check(repair: false).problems == expected)
        #expect(try await store.check(repair: true).repaired == expected)
        #expect(try await store.check(repair: false).problems == [])
        #expect(try await store.user(UserID(rawValue: "u1")!, in: acme) == nil)
        #expect(try await store.accounts(withEmail: "ann@x.test") == [AccountRef(tenantId: acme, userId: UserID(rawValue: "u2")!)])
    }

    @Test func aCustomerLinkedToAUserThatDoesNotExistIsUnlinked() async throws {
        let store = try await FileStore(root: root)
        try await store.createTenant(Tenant(id: acme, name: "Acme", createdAt: Date()))
        _ = try await store.updateCustomer(try await store.createCustomer(NewCustomer(name: "Ann", email: "ann@x.test", phone: nil), in: acme, at: Date()).id,
                                           in: acme) { customer, _ in customer.userId = UserID(rawValue: "u7")! }
        let expected = ["customer acme/c1 names user u7, which does not link back (there is no such user); repair removes the link, so the customer can be given a login again"]
        #expect(try await store.check(repair: false).problems == expected)
        #expect(try await store.check(repair: true).repaired == expected)
        #expect(try await store.customer(CustomerID(rawValue: "c1")!, in: acme)?.userId == nil)
    }
}

extension FileStoreCheckTests {
    @Test func aTenantWhoseCreateFailedBeforeItsTenantFileIsRemoved() async throws {
        let store = try await FileStore(root: root)
        let dir = root + "/tenants/acme"
        for sub in ["users", "customers", "customer-emails"] {
            try FileManager.default.createDirectory(atPath: dir + "/" + sub, withIntermediateDirectories: true)
        }
        try Data(#"{"customer": 0, "user": 0}"#.utf8).write(to: URL(fileURLWithPath: dir + "/counters.json"))
        let expected = ["\(dir): a `tenant add` that never finished (no tenant.json, no records); repair removes it"]
        #expect(try await store.check(repair: false).problems == expected)
        #expect(try await store.check(repair: true).repaired == expected)
        #expect(!FileManager.default.fileExists(atPath: dir))
        try await store.createTenant(Tenant(id: acme, name: "Acme", createdAt: Date()))
        #expect(try await store.check(repair: false).problems == [])
        // One that holds a record is left to a person.
        try FileManager.default.removeItem(atPath: dir + "/tenant.json")
        _ = try? FileManager.default.removeItem(atPath: dir + "/journal")
        try Data("{}".utf8).write(to: URL(fileURLWithPath: dir + "/customers/c1.json"))
        #expect(try await store.check(repair: true).problems.contains("\(dir): no readable tenant.json"))
    }
}
