import DesklineCore
import DesklineStore
import Foundation
import Testing

/// `deskline export` / `import` at the port: a tenant read from one store and loaded into
/// another (of every kind, into every kind) reads back the same, and goes on from its numbers.
struct ImportConformanceTests {
    /// Acme with a bit of everything: tickets with messages, notes, a status line and an
    /// assignment, a customer without a login, a call request, inboxes partly read.
    static func filled(_ kind: StoreKind) async throws -> World {
        let w = try await kind.seeded()
        _ = try await w.store.createCustomer(NewCustomer(name: "Cy", email: "cy@x.test", phone: nil), in: w.acme, at: w.now)
        let t1 = try await w.open("Printer")
        _ = try await w.store.changeTicket(t1.id, in: w.acme, w.telling([w.amy], w.draft(.message, "It jams")))
        try await w.append(w.draft(.note, "Check tray 2"), to: t1.id)
        _ = try await w.store.changeTicket(t1.id, in: w.acme, w.telling([w.ann], w.draft(.message, "On it", by: w.amy)))
        let t2 = try await w.open("Mouse", customer: w.bobC)
        _ = try await w.store.appendEntry(w.draft(.status, "status: pending"), to: t2.id, in: w.acme, at: w.now) { ticket in
            ticket.status = .pending
            ticket.assigneeId = w.amy
            ticket.assigneeName = "amy"
        }
        _ = try await w.store.appendEntry(nil, to: t1.id, in: w.acme, at: w.now) { $0.assigneeId = w.amy }
        let time = w.now
        _ = try await w.store.fileCall(in: w.acme) { id in
            let call = CallRequest.filed(id, in: w.acme, by: w.annC, about: t1.id, phone: "+1 555 0100", note: "mornings", at: time)
            var event = TicketEvent(kind: .call, tenantId: w.acme, call: call, actor: Actor(id: w.ann, name: "ann", role: .customer), at: time)
            event.recipients = [w.amy]
            return Change(call: call, inbox: InboxDelivery(event), event: event)
        }
        try await w.store.markNotificationsRead(1, of: w.amy, in: w.acme)
        return w
    }

    /// A store of `kind` with globex (Gus, c1/u1) only.
    static func onlyGlobex(_ kind: StoreKind) async throws -> World {
        let w = World(store: try await kind.make())
        try await w.store.createTenant(Tenant(id: w.globex, name: "Globex", createdAt: w.now))
        let gus = try await w.store.createCustomer(NewCustomer(name: "gus", email: "gus@x.test", phone: nil), in: w.globex, at: w.now)
        _ = try await w.store.createUser(w.newUser("gus", .customer, customer: gus.id), in: w.globex, at: w.now)
        return w
    }

    @Test(arguments: StoreKind.allCases, StoreKind.allCases)
    func aTenantMovedToAnotherStoreReadsBackTheSameAndGoesOnFromItsNumbers(_ from: StoreKind, _ to: StoreKind) async throws {
        let w = try await Self.filled(from)
        let dump = try #require(try await TenantDump.read(w.acme, from: w.store))
        #expect(dump.customers.map(\.id) == [.numbered(1), .numbered(2), .numbered(3)])
        #expect(dump.tickets.map { $0.entries.count } == [3, 1])
        #expect(dump.events.compactMap(\.seq) == Array(1...dump.events.count))

        let target = try await Self.onlyGlobex(to)
        // Globex is there already; acme is not.
        try await target.store.importTenant(dump, replacing: false)
        let moved = try #require(try await TenantDump.read(w.acme, from: target.store))
        #expect(moved == dump)
        #expect(try await target.store.accounts(withEmail: "ann@x.test").contains(AccountRef(tenantId: w.acme, userId: w.ann)))
        #expect(try await target.store.unreadNotificationCount(of: w.amy, in: w.acme) == 2 - 1)
        // Globex was left alone.
        #expect(try await target.store.users(in: target.globex).count == 1)

        // Numbers go on where they stood.
        #expect(try await target.store.createCustomer(NewCustomer(name: "Di", email: "di@x.test", phone: nil), in: w.acme, at: w.now).id == .numbered(4))
        #expect(try await target.store.createUser(target.newUser("dan", .agent), in: w.acme, at: w.now).id == .numbered(4))
        #expect(try await target.open("Next").id == TicketID(1003))
        #expect(try await target.store.lastEventSeq(in: w.acme) == dump.events.count + 1)
        let entry = try await target.append(target.draft(.message, "more"), to: TicketID(1001))
        #expect(entry.seq == 3)
    }

    @Test(arguments: StoreKind.allCases)
    func anExistingTenantIsRefusedUnlessReplacedAndThenReplacedWhole(_ kind: StoreKind) async throws {
        let w = try await Self.filled(kind)
        var dump = try #require(try await TenantDump.read(w.acme, from: w.store))
        await #expect(throws: DesklineError.self) { try await w.store.importTenant(dump, replacing: false) }
        #expect(try await TenantDump.read(w.acme, from: w.store) == dump)

        // A smaller acme replaces the whole tenant: Bob's login and ticket are gone.
        dump.users.removeAll { $0.id == w.bob }
        dump.customers.removeAll { $0.id == w.bobC }
        dump.tickets.removeAll { $0.ticket.customerId == w.bobC }
        dump.events = []
        try await w.store.importTenant(dump, replacing: true)
        let replaced = try #require(try await TenantDump.read(w.acme, from: w.store))
        #expect(replaced == dump)
        #expect(try await w.store.accounts(withEmail: "bob@x.test") == [])
        #expect(try await w.store.user(w.bob, in: w.acme) == nil)
        #expect(try await w.store.tickets(ofCustomer: w.bobC, in: w.acme) == [])
    }

    @Test(arguments: StoreKind.allCases)
    func anInconsistentDumpIsRefusedAndNothingIsStored(_ kind: StoreKind) async throws {
        let w = try await Self.filled(kind)
        let dump = try #require(try await TenantDump.read(w.acme, from: w.store))
        let target = try await Self.onlyGlobex(kind)
        var broken = dump
        broken.users[0].customerId = .numbered(9)
        await #expect(throws: DesklineError.self) { try await target.store.importTenant(broken, replacing: false) }
        broken = dump
        broken.events.removeFirst(2)
        broken.events.remove(at: 1)
        await #expect(throws: DesklineError.self) { try await target.store.importTenant(broken, replacing: false) }
        #expect(try await target.store.tenant(w.acme) == nil)
        #expect(try await target.store.accounts(withEmail: "amy@x.test").allSatisfy { $0.tenantId != w.acme })
    }

    @Test func aDumpFileRoundTripsAndACutOrForeignFileIsRefused() async throws {
        let w = try await Self.filled(.inMemory)
        let dump = try #require(try await TenantDump.read(w.acme, from: w.store))
        var file = try DumpFile.header(exportedAt: Date())
        try DumpFile.write(dump, { file.append($0) })
        file.append(try DumpFile.trailer(tenants: 1))
        func read(_ data: Data) throws -> [TenantDump] {
            var reader = DumpFile.Reader()
            var dumps: [TenantDump] = []
            for line in data.split(separator: 0x0A, omittingEmptySubsequences: false) {
                if let dump = try reader.take(Data(line)) { dumps.append(dump) }
            }
            try reader.finish()
            return dumps
        }
        #expect(try read(file) == [dump])
        // Cut anywhere: refused, even right after a tenant's end line.
        let lines = file.split(separator: 0x0A)
        for keep in [lines.count - 3, lines.count - 1] {
            let cut = Data(lines.prefix(keep).joined(separator: [0x0A])) + Data([0x0A])
            #expect(throws: DesklineError.self) { try read(cut) }
        }
        // One character changed in a record (a password hash): the digest differs.
        var text = String(decoding: file, as: UTF8.self)
        text = text.replacingOccurrences(of: "hash-ann", with: "hash-anm")
        #expect(throws: DesklineError.self) { try read(Data(text.utf8)) }
        // A dropped record inside: the count does not match.
        var missing = lines
        missing.remove(at: 4)
        #expect(throws: DesklineError.self) { try read(Data(missing.joined(separator: [0x0A]))) }
        // Another format or version.
        #expect(throws: DesklineError.self) { try read(Data("{\"format\":\"deskline-export\",\"version\":2}\n".utf8)) }
        #expect(throws: DesklineError.self) { try read(Data("{\"name\":\"x\"}\n".utf8)) }
        #expect(throws: DesklineError.self) { try read(Data()) }
    }
}
