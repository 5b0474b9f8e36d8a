import ArgumentParser
import Foundation
import NIOCore
import NIOPosix

/// Fan-out across nodes (issue #19): a throwaway PostgreSQL, two `deskline serve` nodes on it,
/// the senders on node 1 and the watchers on node 2, so every delivery crosses from one node to
/// the other (commit, `NOTIFY`, node 2 reads the event log and pushes). For comparison the same
/// steps with senders and watchers on node 1. The workload and the measurement are `fanout`'s
/// (``FanoutSweep``). `Scripts/bench-nodes` builds and runs this.
struct NodesBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nodes",
        abstract: "Fan-out across two deskline serve nodes on one PostgreSQL: senders on node 1, watchers on node 2."
    )

    @Option(help: "Tickets, each with one sender.") var tickets = 100
    @Option(help: "Watchers per ticket.") var watchers = 10
    @Option(help: "Deliveries per second to offer, in total, one step each: a step sends this ÷ watchers messages/s.")
    var deliveries = "1000,10000"
    @Option(help: "Seconds per step.") var stepSeconds = 5.0
    @Option(help: "Runs per step; the step counts as its run with the median p99.") var repeats = 1
    @Option(help: "A step fails above this p99 latency (ms); the steps after a failed one are skipped.") var maxP99 = 50.0
    @Flag(help: "Skip the comparison with senders and watchers on the same node.") var acrossOnly = false
    @Option(help: "The deskline binary to start (default: next to this one).") var deskline: String?
    @Option(help: "Scripts/postgres-dev (default: the one in the working directory or the repository of this build).") var postgresDev: String?
    @Option(help: "Directory for the PostgreSQL cluster and the nodes' configs (default: a new one under /tmp, removed afterwards).")
    var directory: String?
    @Option(help: "Where to write the results as JSON.") var json = "bench-nodes.json"
    @Option(help: "Event loop threads of the load generator.") var threads = 2

    func run() async throws {
        let files = raiseOpenFilesLimit()
        say("Machine: \(machineDescription()); open-files limit \(files)")
        let steps = deliveries.split(separator: ",").compactMap { Double($0.trimmingCharacters(in: .whitespaces)) }
        guard !steps.isEmpty, tickets > 0, watchers > 0 else { throw BenchError("need --deliveries, at least a ticket and a watcher") }
        let binary = desklineBinary(deskline)
        guard FileManager.default.isExecutableFile(atPath: binary) else { throw BenchError("no deskline binary at \(binary) (--deskline)") }
        let work = directory ?? NSTemporaryDirectory() + "deskline-bench-nodes-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        defer { if directory == nil { try? FileManager.default.removeItem(atPath: work) } }

        let postgres = try await BenchPostgres.start(in: work + "/pg", script: postgresDev)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        var nodes: [ServerRun] = []
        var results: [FanoutBench.TargetResult] = []
        do {
            say("PostgreSQL on \(postgres.settings.serverDescription) (\(postgres.directory)); deskline migrate:")
            try await postgres.migrate(binary: binary, work: work + "/migrate")
            let tickets = self.tickets, watchers = self.watchers
            let ids = try await postgres.withStore { store in
                try await DesklineTarget.seed(store, tickets: tickets, watchers: watchers, stormUsers: 0)
            }
            for n in 1...2 {
                nodes.append(try await ServerRun.start(binary: binary, work: work + "/node\(n)", limits: DesklineTarget.limits, storage: postgres.storage))
            }
            say("Node 1 listens on \(nodes[0].port), node 2 on \(nodes[1].port); \(tickets) tickets x \(watchers) watchers")
            let sweep = FanoutSweep(tickets: tickets, watchers: watchers, stepSeconds: stepSeconds, repeats: repeats, maxP99: maxP99, sessions: 0)
            var targets = [DesklineTarget(name: "PostgreSQL, senders on node 1, watchers on node 2", server: nodes[0], watcherServer: nodes[1], tickets: ids)]
            if !acrossOnly {
                targets.append(DesklineTarget(name: "PostgreSQL, senders and watchers on node 1", server: nodes[0], watcherServer: nodes[0], tickets: ids))
            }
            // The sweep offers messages/s; each message goes to every watcher of its ticket.
            let rates = steps.map { $0 / Double(watchers) }
            for target in targets { results.append(try await sweep.measure(target, group: group, steps: rates)) }
        } catch {
            for node in nodes { try? node.stop() }
            await postgres.stop()
            try? await group.shutdownGracefully()
            throw error
        }
        for node in nodes { try? node.stop() }
        await postgres.stop()
        try await group.shutdownGracefully()
        report(results)
    }

    func report(_ results: [FanoutBench.TargetResult]) {
        var rows: [(String, String)] = [("machine", machineDescription())]
        for result in results {
            if result.steps.isEmpty { rows.append((result.name, "no step ran")) }
            for step in result.steps {
                rows.append(("\(result.name), \(format(step.offered * Double(watchers), 0)) deliveries/s offered",
                             "\(format(step.deliveredPerSecond, 0)) delivered/s, p50 \(format(step.latency.ms(0.5), 2)) ms, p99 \(format(step.p99, 2)) ms"
                             + (step.lost + step.errors > 0 ? ", \(step.lost) lost, \(step.errors) errors" : "")
                             + (step.passed ? "" : " (failed)")))
            }
        }
        printTable("deskline-bench nodes (\(tickets) tickets x \(watchers) watchers, \(format(stepSeconds, 0)) s per step)", rows)
        let object: [String: Any] = [
            "machine": machineDescription(), "tickets": tickets, "watchers": watchers, "stepSeconds": stepSeconds, "repeats": repeats,
            "targets": results.map { result -> [String: Any] in
                ["name": result.name, "steps": result.steps.map { step -> [String: Any] in
                    var o = step.dictionary
                    o["offeredDeliveriesPerSecond"] = step.offered * Double(watchers)
                    return o
                }]
            },
        ]
        if let data = try? JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys]) {
            try? data.write(to: URL(fileURLWithPath: json))
            say("\nResults written to \(json)")
        }
    }
}
