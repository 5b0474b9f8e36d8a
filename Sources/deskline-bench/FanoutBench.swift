import ArgumentParser
import Foundation
import NIOCore
import NIOPosix

/// Fan-out throughput and latency, session memory and a login storm, for Deskline and (with
/// `--irc`) classic IRC daemons on the same machine in the same run. `Scripts/bench` starts the
/// daemons and runs this.
struct FanoutBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fanout",
        abstract: "Fan-out sweep, idle-session memory and login storm (Deskline and IRC daemons)."
    )

    @Option(help: "Tickets (channels), each with one sender.") var tickets = 100
    @Option(help: "Watchers per ticket.") var watchers = 10
    @Option(help: "Offered send rates to sweep, messages/s in total (each is delivered to every watcher).")
    var rates = "1000,2000,3000,4000,5000,7000,10000,15000,20000,25000,30000,40000,50000,70000,100000"
    @Option(help: "Seconds per step of the sweep.") var stepSeconds = 5.0
    @Option(help: "Runs per step of the sweep; the step counts as its run with the median p99 (this machine's noise is often larger than the effect measured). The storm runs this many pairs (without, with) and compares the medians.")
    var repeats = 1
    @Option(help: "A step fails above this p99 latency (ms).") var maxP99 = 50.0
    @Option(help: "IRC daemon to compare, as NAME:PORT:PID (repeatable).") var irc: [String] = []
    @Option(help: "Idle logged-in sessions to open for the memory figure (0: skip).") var sessions = 10_000
    @Option(help: "Login attempts per second during the storm (0: skip the storm).") var stormRate = 30.0
    @Option(help: "The deskline binary to start (default: next to this one).") var deskline: String?
    @Option(help: "Where to write the results as JSON.") var json = "bench.json"
    @Option(help: "Event loop threads of the load generator.") var threads = 2
    @Option(help: "The server's storage.groupCommitIntervalMilliseconds (default: its config default).") var groupCommitMs: Int?
    @Option(help: "The cold-start probe: a fresh server's first step at this rate (messages/s sent; 1,000 is 10,000 deliveries/s with 10 watchers), then the same step again --warm-runs times (0: skip the probe).")
    var coldRate = 1000.0
    @Option(help: "Steps after the cold one in the cold-start probe (at least 1).") var warmRuns = 3
    @Flag(help: "Skip Deskline's IRC dialect (measured on the same server after the native one).") var noDesklineIrc = false

    func run() async throws {
        let files = raiseOpenFilesLimit()
        say("Machine: \(machineDescription()); open-files limit \(files)")
        if sessions + tickets * (watchers + 1) + 100 > files {
            say("warning: the open-files limit (\(files)) is below what the run needs; raise it (ulimit -n) or lower --sessions")
        }
        let rateSteps = rates.split(separator: ",").compactMap { Double($0.trimmingCharacters(in: .whitespaces)) }
        let binary = desklineBinary(deskline)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        var results: [TargetResult] = []

        let work = NSTemporaryDirectory() + "deskline-bench-fanout-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: work) }
        var cold: ColdResult?
        if coldRate > 0 {
            say("\nPreparing a fresh Deskline for the cold-start probe ...")
            let fresh = try await DesklineTarget.start(binary: binary, work: work, tickets: tickets, watchers: watchers,
                                                       stormUsers: 0, groupCommitMilliseconds: groupCommitMs)
            do {
                cold = try await coldStart(fresh, group: group)
            } catch {
                try? fresh.server.stop()
                throw error
            }
            try fresh.server.stop()
        }
        say("\nPreparing Deskline (\(tickets) tickets, \(watchers) watchers each) ...")
        let desk = try await DesklineTarget.start(binary: binary, work: work, tickets: tickets, watchers: watchers,
                                                  stormUsers: stormRate > 0 ? 64 : 0, groupCommitMilliseconds: groupCommitMs)
        do {
            var deskResult = try await sweep.measure(desk, group: group, steps: rateSteps)
            if stormRate > 0, let best = deskResult.best {
                deskResult.storm = try await storm(desk, group: group, sendRate: best.offered / 2)
            }
            results.append(deskResult)
        } catch {
            try? desk.server.stop()
            throw error
        }
        try desk.server.stop()
        if !noDesklineIrc {
            // A fresh server for the IRC dialect, so its memory figure owes nothing to the heap
            // the native sessions left behind.
            say("\nPreparing Deskline again for its IRC dialect ...")
            let again = try await DesklineTarget.start(binary: binary, work: work, tickets: tickets, watchers: watchers,
                                                       stormUsers: 0, groupCommitMilliseconds: groupCommitMs)
            do {
                guard let port = again.server.ircPort else { throw BenchError("the server has no IRC listener") }
                results.append(try await sweep.measure(DesklineIRCTarget(desk: again, port: port), group: group, steps: rateSteps))
            } catch {
                try? again.server.stop()
                throw error
            }
            try again.server.stop()
        }

        for spec in irc {
            let parts = spec.split(separator: ":")
            guard parts.count == 3, let port = Int(parts[1]), let pid = Int32(parts[2]) else { throw BenchError("--irc wants NAME:PORT:PID, got \(spec)") }
            do {
                results.append(try await sweep.measure(IRCTarget(name: String(parts[0]), port: port, pid: pid), group: group, steps: rateSteps))
            } catch {
                say("\(parts[0]): failed: \(error)")
                results.append(TargetResult(name: String(parts[0])))
            }
        }
        report(results, cold: cold)
        try await group.shutdownGracefully()
    }

    /// A fresh server's first step and the same step run again on it.
    struct ColdResult {
        var first: StepResult
        var later: [StepResult]
        /// The later run with the median p99.
        var warm: StepResult { later.sorted { $0.p99 < $1.p99 }[later.count / 2] }
    }

    /// The first load a freshly started server gets (after its watchers and senders logged in
    /// and joined), at `coldRate`, then the same load `warmRuns` times more.
    func coldStart(_ target: DesklineTarget, group: EventLoopGroup) async throws -> ColdResult {
        say("Deskline cold start: \(tickets * watchers) watchers and \(tickets) senders connect to the fresh server (started in \(format(target.server.startSeconds * 1000, 0)) ms), then \(format(coldRate, 0)) messages/s (\(format(coldRate * Double(watchers), 0)) deliveries/s), \(1 + warmRuns) times")
        let run = try await FanoutRun.connect(target, tickets: tickets, watchers: watchers, group: group)
        say(StepResult.header)
        let first = try await run.step(rate: coldRate, seconds: stepSeconds, maxP99: maxP99)
        say(first.row(verdict: false) + "   (the first step after start)")
        var later: [StepResult] = []
        for n in 0..<max(1, warmRuns) {
            let step = try await run.step(rate: coldRate, seconds: stepSeconds, maxP99: maxP99)
            say(step.row(verdict: false) + "   (run \(n + 2))")
            later.append(step)
        }
        await run.close()
        return ColdResult(first: first, later: later)
    }

    struct TargetResult {
        var name: String
        var steps: [StepResult] = []
        var sessionKiB: (baseline: Int, loaded: Int, count: Int)?
        var storm: StormResult?
        /// The best step that kept every message and stayed under the latency limit.
        var best: StepResult? { steps.filter(\.passed).max { $0.deliveredPerSecond < $1.deliveredPerSecond } }
    }

    /// The sweep as the options ask for it.
    var sweep: FanoutSweep {
        FanoutSweep(tickets: tickets, watchers: watchers, stepSeconds: stepSeconds, repeats: repeats, maxP99: maxP99, sessions: sessions)
    }

    struct StormResult {
        var sendRate: Double
        /// The steps without and with the storm, pair by pair (`--repeats` pairs).
        var quietRuns: [StepResult]
        var stormyRuns: [StepResult]
        var logins: Int, succeeded: Int, busy: Int, failed: Int
        var loginP50: Double, loginP99: Double

        /// The runs with the median p99 stand for each side.
        var quiet: StepResult { Self.median(quietRuns) }
        var stormy: StepResult { Self.median(stormyRuns) }
        var factor: Double { stormy.p99 / quiet.p99 }

        private static func median(_ runs: [StepResult]) -> StepResult {
            runs.sorted { $0.p99 < $1.p99 }[runs.count / 2]
        }
    }

    /// Fan-out at `sendRate` without and then with logins from fresh connections at `stormRate`,
    /// `repeats` times in alternation (so a drift of the machine's speed hits both sides alike);
    /// the storm's figure compares the median p99 of each side.
    func storm(_ target: DesklineTarget, group: EventLoopGroup, sendRate: Double) async throws -> StormResult {
        let run = try await FanoutRun.connect(target, tickets: tickets, watchers: watchers, group: group)
        let pairs = max(1, repeats)
        say("\nLogin storm: fan-out at \(format(sendRate, 0)) messages/s (half the best), then the same with \(format(stormRate, 0)) logins/s"
            + (pairs > 1 ? ", \(pairs) times" : ""))
        say(StepResult.header)
        let tally = StormTally()
        var quietRuns: [StepResult] = [], stormyRuns: [StepResult] = []
        for _ in 1...pairs {
            let quiet = try await run.step(rate: sendRate, seconds: stepSeconds * 2, maxP99: .infinity)
            say(quiet.row())
            quietRuns.append(quiet)
            let stormTask = Task { await loginStorm(port: target.server.port, group: group, seconds: stepSeconds * 2 + 0.5, tally: tally) }
            try await Task.sleep(for: .milliseconds(500))
            let stormy = try await run.step(rate: sendRate, seconds: stepSeconds * 2, maxP99: .infinity)
            say(stormy.row() + "   (during the storm)")
            stormyRuns.append(stormy)
            await stormTask.value
        }
        await run.close()
        let t = tally.snapshot()
        say("Logins: \(t.count) attempted, \(t.ok) OK, \(t.busy) BUSY, \(t.other) other; reply p50 \(format(t.latency.ms(0.5), 0)) ms, p99 \(format(t.latency.ms(0.99), 0)) ms")
        return StormResult(sendRate: sendRate, quietRuns: quietRuns, stormyRuns: stormyRuns, logins: t.count, succeeded: t.ok, busy: t.busy,
                           failed: t.other, loginP50: t.latency.ms(0.5), loginP99: t.latency.ms(0.99))
    }

    /// Logins from fresh connections at `stormRate` for `seconds`, each connection closed after
    /// its reply; the replies go to `tally`.
    private func loginStorm(port: Int, group: EventLoopGroup, seconds: Double, tally: StormTally) async {
        let interval = 1.0 / stormRate
        let start = now()
        var k = 0
        await withTaskGroup(of: Void.self) { logins in
            while now() - start < seconds {
                let due = start + Double(k) * interval
                if due > now() { try? await Task.sleep(for: .seconds(due - now())) }
                let user = k % 64
                k += 1
                logins.addTask {
                    let t = now()
                    do {
                        let connection = try await LineConnection.connect(group, port: port)
                        let reply = try await connection.command("LOGIN storm\(user)@bench.test \(DesklineTarget.password)")
                        tally.add(reply, seconds: now() - t)
                        await connection.close()
                    } catch {
                        tally.add("ERR failed \(error)", seconds: now() - t)
                    }
                }
            }
        }
    }

    func report(_ results: [TargetResult], cold: ColdResult?) {
        var rows: [(String, String)] = [("machine", machineDescription())]
        if let cold {
            func describe(_ step: StepResult) -> String {
                "p50 \(format(step.latency.ms(0.5), 2)) ms, p99 \(format(step.p99, 2)) ms, max \(format(step.latency.ms(1), 1)) ms, \(step.cpuMicrosPerLine.map { format($0, 1) } ?? "?") µs CPU a line"
            }
            rows.append(("Deskline: first step after start", "\(format(cold.first.deliveredPerSecond, 0)) delivered/s, " + describe(cold.first)))
            rows.append(("Deskline: the same step later", "\(format(cold.warm.deliveredPerSecond, 0)) delivered/s, " + describe(cold.warm) + " (median of \(cold.later.count))"))
        }
        let reference = results.first?.best?.deliveredPerSecond
        for r in results {
            if let best = r.best {
                let ratio = reference.map { " (Deskline ÷ this: \(format($0 / best.deliveredPerSecond, 2))x)" } ?? ""
                rows.append(("\(r.name): best sustained", "\(format(best.deliveredPerSecond, 0)) delivered/s at \(format(best.offered, 0)) sent/s, p99 \(format(best.p99, 2)) ms" + (r.name == "Deskline" ? "" : ratio)))
            } else {
                rows.append(("\(r.name): best sustained", "no step passed"))
            }
            if let s = r.sessionKiB {
                rows.append(("\(r.name): idle sessions", "\(s.count): \(format(Double(s.loaded - s.baseline) / Double(s.count), 2)) KiB each (RSS \(s.baseline / 1024) → \(s.loaded / 1024) MiB)"))
            }
            if let storm = r.storm {
                rows.append(("\(r.name): login storm", "p99 \(format(storm.quiet.p99, 2)) ms → \(format(storm.stormy.p99, 2)) ms (\(format(storm.factor, 2))x\(storm.quietRuns.count > 1 ? ", medians of \(storm.quietRuns.count)" : "")) at \(format(storm.sendRate, 0)) sent/s; \(storm.succeeded) OK, \(storm.busy) BUSY of \(storm.logins)"))
            }
        }
        printTable("deskline-bench fanout (\(tickets) tickets x \(watchers) watchers)", rows)
        sideBySide(results)
        var object: [String: Any] = [
            "machine": machineDescription(), "tickets": tickets, "watchers": watchers, "stepSeconds": stepSeconds, "repeats": repeats,
            "targets": results.map { r -> [String: Any] in
                var o: [String: Any] = ["name": r.name, "steps": r.steps.map(\.dictionary)]
                if let best = r.best { o["bestDeliveredPerSecond"] = best.deliveredPerSecond }
                if let s = r.sessionKiB { o["sessions"] = ["count": s.count, "baselineKiB": s.baseline, "loadedKiB": s.loaded] }
                if let storm = r.storm {
                    o["storm"] = ["sendRate": storm.sendRate, "quiet": storm.quiet.dictionary, "stormy": storm.stormy.dictionary, "factor": storm.factor,
                                  "quietRuns": storm.quietRuns.map(\.dictionary), "stormyRuns": storm.stormyRuns.map(\.dictionary),
                                  "logins": storm.logins, "ok": storm.succeeded, "busy": storm.busy, "failed": storm.failed,
                                  "loginP50ms": storm.loginP50, "loginP99ms": storm.loginP99]
                }
                return o
            },
        ]
        if let cold {
            object["coldStart"] = ["first": cold.first.dictionary, "later": cold.later.map(\.dictionary)]
        }
        if let data = try? JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys]) {
            try? data.write(to: URL(fileURLWithPath: json))
            say("\nResults written to \(json)")
        }
    }
}

extension FanoutBench {
    /// Every step every target ran, side by side: delivered/s, p50 / p99 and the server's CPU per
    /// delivered line, with Deskline's CPU per line as a multiple of each daemon's.
    func sideBySide(_ results: [TargetResult]) {
        let offered = Set(results.flatMap { $0.steps.map(\.offered) }).sorted()
        guard !offered.isEmpty else { return }
        say("\nEach step side by side: delivered/s, p50 / p99 ms, server CPU µs per delivered line")
        let width = 34
        func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s + " " : s + String(repeating: " ", count: n - s.count) }
        say(pad("deliveries/s offered", 22) + results.map { pad($0.name, width) }.joined())
        let deskline = results.first
        for rate in offered {
            var line = pad(format(rate * Double(watchers), 0), 22)
            let mine = deskline?.steps.first { $0.offered == rate }?.cpuMicrosPerLine
            for r in results {
                guard let step = r.steps.first(where: { $0.offered == rate }) else { line += pad("-", width); continue }
                var cell = "\(format(step.deliveredPerSecond, 0)), \(format(step.latency.ms(0.5), 2)) / \(format(step.p99, 2)), \(step.cpuMicrosPerLine.map { format($0, 1) } ?? "?")"
                if r.name != deskline?.name, let mine, let theirs = step.cpuMicrosPerLine, theirs > 0 { cell += " (\(format(mine / theirs, 2))x)" }
                line += pad(cell + (step.passed ? "" : " !"), width)
            }
            say(line)
        }
        say("(x: Deskline's CPU per line ÷ this server's; !: the step lost a message or passed the p99 limit)")
    }
}

/// The fan-out measurement `fanout` and `nodes` share: idle sessions, then watchers and senders
/// connected and a sweep of offered rates.
struct FanoutSweep {
    var tickets: Int
    var watchers: Int
    var stepSeconds: Double
    var repeats: Int
    var maxP99: Double
    /// Idle logged-in sessions to open for the memory figure first (0: none).
    var sessions: Int

    /// Measures idle sessions (unless `sessions` is 0), then connects the watchers and senders
    /// and steps through the offered send `steps` (messages/s in total), stopping after the
    /// first step that fails.
    func measure(_ target: FanoutTarget, group: EventLoopGroup, steps: [Double]) async throws -> FanoutBench.TargetResult {
        var result = FanoutBench.TargetResult(name: target.name)
        if sessions > 0 { result.sessionKiB = try await idleSessions(target, group: group) }
        say("\n\(target.name): connecting \(tickets * watchers) watchers and \(tickets) senders ...")
        let run = try await FanoutRun.connect(target, tickets: tickets, watchers: watchers, group: group)
        say("\(target.name) fan-out, \(tickets) tickets x \(watchers) watchers, \(format(stepSeconds, 0)) s per step")
        say(StepResult.header)
        for rate in steps {
            var runs: [StepResult] = []
            for n in 1...max(1, repeats) {
                let step = try await run.step(rate: rate, seconds: stepSeconds, maxP99: maxP99)
                if repeats > 1 { say(step.row(verdict: false) + "   (run \(n) of \(repeats))") }
                runs.append(step)
            }
            // The run with the median p99 stands for the step (a lost message fails every run).
            let step = runs.sorted { ($0.lost + $0.errors, $0.p99) < ($1.lost + $1.errors, $1.p99) }[runs.count / 2]
            result.steps.append(step)
            say(step.row() + (repeats > 1 ? "   (median)" : ""))
            if !step.passed { break }
        }
        await run.close()
        return result
    }

    /// Opens `sessions` logged-in idle connections and reads the server's RSS before and after.
    func idleSessions(_ target: FanoutTarget, group: EventLoopGroup) async throws -> (baseline: Int, loaded: Int, count: Int) {
        // One session first, left open: the code and data the first login touches once (pages
        // of the binary and its libraries, the tenant's users) are not a cost per session.
        let warmUp = try await target.idle(sessions, group: group)
        try await Task.sleep(for: .milliseconds(500))
        let baseline = residentKiB(of: target.pid) ?? 0
        say("\n\(target.name): opening \(sessions) idle logged-in sessions (RSS before: \(baseline / 1024) MiB) ...")
        var open: [LineConnection] = []
        // Many registrations in flight: InspIRCd answers them on a once-a-second tick.
        let batch = 500
        for start in stride(from: 0, to: sessions, by: batch) {
            let connections = try await withThrowingTaskGroup(of: LineConnection.self) { tasks in
                for i in start..<min(sessions, start + batch) {
                    tasks.addTask { try await target.idle(i, group: group) }
                }
                return try await tasks.reduce(into: []) { $0.append($1) }
            }
            open += connections
        }
        try await Task.sleep(for: .seconds(1))
        let loaded = residentKiB(of: target.pid) ?? 0
        say("\(target.name): RSS with \(open.count) sessions \(loaded / 1024) MiB: \(format(Double(loaded - baseline) / Double(open.count), 2)) KiB per session")
        for connection in open + [warmUp] { await connection.close() }
        try await Task.sleep(for: .seconds(1))
        return (baseline, loaded, open.count)
    }
}

/// Replies to the storm's logins.
final class StormTally: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0, ok = 0, busy = 0, other = 0
    private var latency = Histogram()

    func add(_ reply: String, seconds: Double) {
        lock.lock()
        defer { lock.unlock() }
        count += 1
        if reply.hasPrefix("OK") { ok += 1 } else if reply.contains(" BUSY ") { busy += 1 } else { other += 1 }
        latency.record(seconds: seconds)
    }

    func snapshot() -> (count: Int, ok: Int, busy: Int, other: Int, latency: Histogram) {
        lock.lock()
        defer { lock.unlock() }
        return (count, ok, busy, other, latency)
    }
}

struct StepResult {
    /// The heading of ``row(verdict:)``'s columns.
    static let header = "  offered/s  delivered/s     p50 ms   p90 ms   p99 ms   max ms   lost  errors  cpu µs/line"

    var offered: Double
    var seconds: Double
    var sent: Int
    var expected: Int
    var received: Int
    var errors: Int
    var latency: Histogram
    var maxP99: Double
    /// The server's CPU time (every thread, user and system) from the step's start until its
    /// deliveries settled; nil if /proc did not tell.
    var serverCPU: Double?

    var deliveredPerSecond: Double { Double(received) / seconds }
    /// Server CPU per delivered line, in µs.
    var cpuMicrosPerLine: Double? { serverCPU.flatMap { received > 0 ? $0 / Double(received) * 1e6 : nil } }
    var lost: Int { max(0, expected - received) }
    var p99: Double { latency.ms(0.99) }
    var passed: Bool { lost == 0 && errors == 0 && p99 <= maxP99 }

    /// The table row; with `verdict`, a failed step is marked where the sweep stops.
    func row(verdict: Bool = true) -> String {
        func pad(_ s: String, _ n: Int) -> String { String(repeating: " ", count: max(0, n - s.count)) + s }
        return pad(format(offered, 0), 11) + pad(format(deliveredPerSecond, 0), 13) + pad(format(latency.ms(0.5), 2), 11)
            + pad(format(latency.ms(0.9), 2), 9) + pad(format(p99, 2), 9) + pad(format(latency.ms(1), 2), 9)
            + pad(String(lost), 7) + pad(String(errors), 8) + pad(cpuMicrosPerLine.map { format($0, 1) } ?? "?", 12)
            + (passed || !verdict ? "" : "   <- stop")
    }

    var dictionary: [String: Any] {
        ["offeredPerSecond": offered, "deliveredPerSecond": deliveredPerSecond, "sent": sent, "expected": expected,
         "received": received, "lost": lost, "errors": errors, "p50ms": latency.ms(0.5), "p90ms": latency.ms(0.9),
         "p99ms": p99, "maxms": latency.ms(1), "passed": passed, "serverCPUSeconds": serverCPU as Any,
         "cpuMicrosPerDelivered": cpuMicrosPerLine as Any]
    }
}

/// The connections of one fan-out run, and the open-loop senders.
final class FanoutRun: @unchecked Sendable {
    let target: FanoutTarget
    let senders: [LineConnection]
    let watchers: [LineConnection]
    let watchersPerTicket: Int
    /// Per event loop: what its connections measured.
    let stats: [ObjectIdentifier: LoopStats]
    let loops: [EventLoop]

    private init(target: FanoutTarget, senders: [LineConnection], watchers: [LineConnection], watchersPerTicket: Int, loops: [EventLoop]) {
        self.target = target
        self.senders = senders
        self.watchers = watchers
        self.watchersPerTicket = watchersPerTicket
        self.loops = loops
        var stats: [ObjectIdentifier: LoopStats] = [:]
        for loop in loops { stats[ObjectIdentifier(loop)] = LoopStats() }
        self.stats = stats
    }

    static func connect(_ target: FanoutTarget, tickets: Int, watchers perTicket: Int, group: EventLoopGroup) async throws -> FanoutRun {
        var watchers: [LineConnection] = []
        let pairs = (0..<tickets).flatMap { t in (0..<perTicket).map { (t, $0) } }
        for start in stride(from: 0, to: pairs.count, by: 100) {
            watchers += try await withThrowingTaskGroup(of: LineConnection.self) { tasks in
                for (t, w) in pairs[start..<min(pairs.count, start + 100)] { tasks.addTask { try await target.watcher(t, w, group: group) } }
                return try await tasks.reduce(into: []) { $0.append($1) }
            }
        }
        var senders: [LineConnection] = []
        for t in 0..<tickets { senders.append(try await target.sender(t, group: group)) }
        let loops = Array(group.makeIterator())
        let run = FanoutRun(target: target, senders: senders, watchers: watchers, watchersPerTicket: perTicket, loops: loops)
        for connection in watchers {
            let stats = run.stats[ObjectIdentifier(connection.channel.eventLoop)]!
            try await connection.channel.eventLoop.submit {
                connection.onLine = { line in
                    guard let stamp = number(after: stampMarker, in: line) else { return }
                    stats.latency.record(micros: Int((nanos() - stamp) / 1000))
                    stats.received += 1
                }
            }.get()
        }
        for connection in senders {
            let stats = run.stats[ObjectIdentifier(connection.channel.eventLoop)]!
            try await connection.channel.eventLoop.submit {
                connection.onLine = { line in
                    if line.starts(with: Array("ERR ".utf8)) { stats.errors += 1 }
                }
            }.get()
        }
        return run
    }

    /// Sends at `rate` messages/s in total for `seconds`, each sender on an even schedule stamped
    /// with the intended send time (so a late sender does not hide latency), then waits for the
    /// deliveries to settle.
    func step(rate: Double, seconds: Double, maxP99: Double) async throws -> StepResult {
        for loop in loops { try await loop.submit { self.stats[ObjectIdentifier(loop)]!.reset() }.get() }
        let tickets = senders.count
        let interval = Int64(Double(tickets) / rate * 1e9)
        let start = nanos() + 50_000_000
        let end = start + Int64(seconds * 1e9)
        let sent = SentCounter()
        let cpuBefore = cpuSeconds(of: target.cpuPids)
        var pacers: [PacedSender] = []
        for (t, connection) in senders.enumerated() {
            let target = self.target
            let pacer = PacedSender(channel: connection.channel!, first: start + Int64(Double(t) / rate * 1e9), interval: interval,
                                    end: end, sent: sent) { target.message(t, stamp: $0) }
            pacer.start()
            pacers.append(pacer)
        }
        try await Task.sleep(for: .nanoseconds(end - nanos()))
        for pacer in pacers { pacer.stop() }
        // Let deliveries settle: until all arrived, or nothing new for a second (at most 10 s).
        let expected = sent.value * watchersPerTicket
        var last = -1, quietSince = now()
        let deadline = now() + 10
        while now() < deadline {
            let received = try await totals().received
            if received >= expected { break }
            if received != last { last = received; quietSince = now() } else if now() - quietSince > 1 { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        let totals = try await totals()
        let cpu = cpuBefore.flatMap { before in cpuSeconds(of: target.cpuPids).map { $0 - before } }
        return StepResult(offered: rate, seconds: seconds, sent: sent.value, expected: expected, received: totals.received,
                          errors: totals.errors, latency: totals.latency, maxP99: maxP99, serverCPU: cpu)
    }

    private func totals() async throws -> (received: Int, errors: Int, latency: Histogram) {
        var received = 0, errors = 0
        var latency = Histogram()
        for loop in loops {
            let (r, e, h) = try await loop.submit { () -> (Int, Int, Histogram) in
                let s = self.stats[ObjectIdentifier(loop)]!
                return (s.received, s.errors, s.latency)
            }.get()
            received += r
            errors += e
            latency.merge(h)
        }
        return (received, errors, latency)
    }

    func close() async {
        for connection in senders + watchers { await connection.close() }
    }
}

/// One open-loop sender: wakes at each message's intended send time (a timer per message, not
/// a polling tick, so the generator's own cost stays proportional to what it sends), sends what
/// is due stamped with its intended time, and schedules the next. Touched only on its channel's
/// event loop.
final class PacedSender: @unchecked Sendable {
    private let channel: Channel
    private var next: Int64
    private let interval: Int64
    private let end: Int64
    private let sent: SentCounter
    private let message: (Int64) -> String
    private var timer: Scheduled<Void>?
    private var stopped = false

    init(channel: Channel, first: Int64, interval: Int64, end: Int64, sent: SentCounter, message: @escaping (Int64) -> String) {
        self.channel = channel
        self.next = first
        self.interval = interval
        self.end = end
        self.sent = sent
        self.message = message
    }

    func start() {
        channel.eventLoop.execute { self.schedule() }
    }

    func stop() {
        channel.eventLoop.execute {
            self.stopped = true
            self.timer?.cancel()
        }
    }

    private func schedule() {
        guard !stopped, next < end else { return }
        timer = channel.eventLoop.scheduleTask(in: .nanoseconds(max(0, next - nanos()))) { self.fire() }
    }

    private func fire() {
        let now = nanos()
        var buffer = channel.allocator.buffer(capacity: 64)
        var count = 0
        // Catch up on everything due (a late wake-up sends its backlog at once, stamped with the
        // intended times, so the lateness shows as latency).
        while next <= now && next < end {
            buffer.writeString(message(next))
            next += interval
            count += 1
        }
        if count > 0 {
            channel.writeAndFlush(buffer, promise: nil)
            sent.add(count)
        }
        schedule()
    }
}

final class SentCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    func add(_ n: Int) { lock.lock(); count += n; lock.unlock() }
    var value: Int { lock.lock(); defer { lock.unlock() }; return count }
}
