import ArgumentParser
import DesklineStore
import Foundation

extension Deskline {
    struct Check: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Verify the data directory; with --repair, fix what can be derived again.",
            discussion: """
            Checks every tenant: files parse, ids are unique and match their files, user and customer
            records link both ways, customer emails and login emails are unique, the login,
            customer-email, customer-ticket and customer-call indexes match the records, ticket and
            inbox logs have no torn last line, no account change was left half done. Exits 1 if
            problems remain. --repair needs the server stopped: it undoes an interrupted account
            change, cuts torn log tails, removes leftover temp files, rebuilds indexes from the
            records, completes a login whose customer back-link is missing, and removes customer and
            user records a refused create left behind once a later one took their email (only if
            nothing refers to them). What needs a person's decision is said as such.
            """)

        @OptionGroup var options: DataOptions
        @Flag(help: "Fix what can be fixed (the server must not be running).")
        var repair = false

        func run() async throws {
            let configuration = try options.loadConfiguration()
            let store = try await FileStore(root: configuration.dataDirectory, create: false)
            var lock: FileStore.ServerLock?
            var live = false
            if repair {
                lock = try await store.lockForServer(pid: getpid())
            } else if await store.isServerRunning() {
                live = true
                print("note: a server is running on \(store.root); this check sees a live store")
            }
            var repairedClean = false
            // A repair that left nothing to fix leaves the directory as a clean stop does, so
            // the next server does not recover it again.
            defer { lock?.release(clean: repairedClean) }
            let report = try await store.check(repair: repair, live: live)
            repairedClean = report.isClean
            let counts = report.counts.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
            print("checked \(store.root): \(counts.isEmpty ? "no data" : counts)")
            for line in report.repaired { print("repaired: \(line)") }
            for line in report.problems { print("problem: \(line)") }
            guard report.isClean else {
                print("\(report.problems.count) problems\(repair ? " left" : "; deskline check --repair fixes what can be derived again")")
                throw ExitCode(1)
            }
            print(report.repaired.isEmpty ? "clean" : "clean after \(report.repaired.count) repairs")
        }
    }
}
