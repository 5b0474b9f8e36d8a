// libFuzzer target for the command dispatcher: every line goes through the same
// `Session.handle` a connection uses (parse, table lookup, access check, argument shapes, the
// command's handler, the services and a real file store), as a guest or logged in as a customer,
// agent or admin. Built by Scripts/fuzz-dispatch with `-sanitize=fuzzer,address` and `-DFUZZING`;
// a normal build compiles only the stub at the end.
//
// Input: the first byte picks who is speaking, the rest is up to 8 lines. Beyond "does not
// crash", each reply is checked:
// - every reply to a line ends with exactly one OK or ERR, after its RPL lines;
// - no serialized line contains CR, LF or NUL;
// - nobody sees what is not theirs: the seed data holds marker strings in another customer's
//   ticket, another tenant's ticket and an internal note, and a reply showing one to someone who
//   may not see it stops the fuzzer.
#if FUZZING
import DesklineCore
@testable import DesklineGateway
import DesklineProtocol
import DesklineStore
import Dispatch
import Foundation
import Logging
import NIOCore
import NIOEmbedded

/// What each speaker must never see.
private let bobSecret = "bob-secret-7f3a", gusSecret = "gus-secret-91c2", noteSecret = "note-secret-55d1"

private struct Speaker: Sendable {
    var scope: SessionScope?
    var forbidden: [String]
}

private final class World: @unchecked Sendable {
    let services: GatewayServices
    let speakers: [Speaker]
    let limits = GatewayConfiguration.Limits()
    let registry = SessionRegistry()
    /// The channel behind every run's outbox (only closed if an outbox overflows).
    let channel = NIOAsyncTestingChannel()
    var nextSession = 1

    init(services: GatewayServices, speakers: [Speaker]) {
        self.services = services
        self.speakers = speakers
    }

    static func make() async throws -> World {
        let root = (FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm/" : NSTemporaryDirectory())
            + "deskline-fuzz-\(getpid())"
        try? FileManager.default.removeItem(atPath: root)
        let store = try await FileStore(root: root)
        let accounts = AccountService(store: store, hasher: PasswordHasher(cost: PasswordHashingCost(n: 1024, r: 8, p: 1)),
                                      passwordWork: PasswordWorkPool(concurrency: 1, queueLimit: 64))
        var limits = GatewayConfiguration.Limits()
        limits.loginFailureDelayMilliseconds = 0 // (a fuzzer's failed logins must not sleep)
        let services = GatewayServices.make(store: store, accounts: accounts, limits: limits)
        let password = "correct horse battery"
        let acme = try await accounts.createTenant(id: "acme", name: "Acme").id
        let globex = try await accounts.createTenant(id: "globex", name: "Globex").id
        let ann = try await accounts.createCustomer(in: acme, name: "Ann", email: "ann@acme.test", phone: "+1 555 0100")
        let bob = try await accounts.createCustomer(in: acme, name: "Bob", email: "bob@acme.test", phone: "+1 555 0199")
        let gus = try await accounts.createCustomer(in: globex, name: "Gus", email: "gus@globex.test", phone: nil)
        _ = try await accounts.createUser(in: acme, email: "ann@acme.test", displayName: nil, role: .customer, customer: ann.id, password: password)
        _ = try await accounts.createUser(in: acme, email: "bob@acme.test", displayName: nil, role: .customer, customer: bob.id, password: password)
        _ = try await accounts.createUser(in: globex, email: "gus@globex.test", displayName: nil, role: .customer, customer: gus.id, password: password)
        _ = try await accounts.createUser(in: acme, email: "amy@acme.test", displayName: "Amy Agent", role: .agent, customer: nil, password: password)
        _ = try await accounts.createUser(in: acme, email: "ada@acme.test", displayName: "Ada Admin", role: .admin, customer: nil, password: password)
        let annScope = try await accounts.login("ann@acme.test", password: password)
        let bobScope = try await accounts.login("bob@acme.test", password: password)
        let gusScope = try await accounts.login("gus@globex.test", password: password)
        let amyScope = try await accounts.login("amy@acme.test", password: password)
        let adaScope = try await accounts.login("ada@acme.test", password: password)
        let tickets = services.tickets
        let annTicket = try await tickets.create(annScope, subject: "Printer jams")
        _ = try await tickets.post(annScope, annTicket.id, text: "It jams on page two")
        _ = try await tickets.note(amyScope, annTicket.id, text: noteSecret)
        let bobTicket = try await tickets.create(bobScope, subject: bobSecret)
        _ = try await tickets.post(bobScope, bobTicket.id, text: bobSecret)
        _ = try await tickets.create(gusScope, subject: gusSecret)
        _ = try await tickets.requestCall(bobScope, ticket: bobTicket.id, note: bobSecret)
        return World(services: services, speakers: [
            Speaker(scope: nil, forbidden: [bobSecret, gusSecret, noteSecret]),
            Speaker(scope: annScope, forbidden: [bobSecret, gusSecret, noteSecret]),
            Speaker(scope: gusScope, forbidden: [bobSecret, noteSecret]),
            Speaker(scope: amyScope, forbidden: [gusSecret]),
            Speaker(scope: adaScope, forbidden: [gusSecret]),
        ])
    }

    func run(_ speaker: Speaker, _ lines: [ArraySlice<UInt8>]) async {
        let id = nextSession
        nextSession += 1
        let session = Session(id: id, environment: SessionEnvironment(
            table: .standard, services: services, limits: limits, registry: registry,
            logger: Logger(label: "fuzz", factory: { _ in SwiftLogNoOpLogHandler() }), lingerTime: .zero))
        let outbox = Outbox(channel: channel, capacity: 100_000)
        defer { services.hub.detach(id) }
        var scope = speaker.scope?.onSession(services.hub.sessionID(id))
        for bytes in lines {
            var line = bytes
            if line.last == 0x0D { line = line.dropLast() }
            let outcome = await session.handle(.line(ByteBuffer(bytes: line)), scope: scope, outbox: outbox)
            check(outcome.lines, speaker)
            if let newScope = outcome.scope, scope == nil { scope = newScope.onSession(services.hub.sessionID(id)) }
            if outcome.quit { return }
        }
    }

    private func check(_ lines: [ServerLine], _ speaker: Speaker) {
        let replies = lines.filter { $0.kind != .event }
        if !replies.isEmpty {
            let terminal = replies.indices.filter { replies[$0].kind == .ok || replies[$0].kind == .err }
            if terminal != [replies.count - 1] {
                fatalError("a reply must end with exactly one OK or ERR: \(replies.map { $0.serialized() })")
            }
        }
        for line in lines {
            let wire = line.serialized()
            if wire.utf8.contains(where: { $0 == 0x0D || $0 == 0x0A || $0 == 0 }) { fatalError("line break on the wire: \(wire.debugDescription)") }
            // Only the logged-in identity counts: a guest who logs in as Bob may see Bob's data.
            if speaker.scope != nil, let leak = speaker.forbidden.first(where: { wire.contains($0) }) {
                fatalError("\(leak) shown to \(String(describing: speaker.scope)): \(wire)")
            }
        }
    }
}

private let world: World = blocking { try! await World.make() }

/// Runs async work to completion from libFuzzer's synchronous callback.
private func blocking<T: Sendable>(_ work: @escaping @Sendable () async -> T) -> T {
    nonisolated(unsafe) var result: T?
    let done = DispatchSemaphore(value: 0)
    Task {
        result = await work()
        done.signal()
    }
    done.wait()
    return result!
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size > 0 else { return 0 }
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    // Inputs that carry a marker themselves could show it legitimately (and store it for later
    // inputs): they are not run.
    let text = String(decoding: bytes, as: UTF8.self)
    if [bobSecret, gusSecret, noteSecret].contains(where: { text.contains($0) }) { return 0 }
    let speaker = world.speakers[Int(bytes[0]) % world.speakers.count]
    let lines = Array(bytes.dropFirst().split(separator: 0x0A, omittingEmptySubsequences: false).prefix(8))
    let w = world
    blocking { await w.run(speaker, lines) }
    return 0
}
#else
/// Without `-DFUZZING` (any normal build) this target is a stub; Scripts/fuzz-dispatch builds the
/// real one.
@main
enum DispatchFuzzStub {
    static func main() {
        print("deskline-fuzz is a libFuzzer target: run Scripts/fuzz-dispatch")
    }
}
#endif
