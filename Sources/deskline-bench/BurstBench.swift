import ArgumentParser
import Foundation
import NIOCore
import NIOPosix

/// A bot posting a burst: each sender writes all its `MSG` lines at once and waits for every
/// reply. Measures how many acknowledged (fsync'd) messages per second that gives, which is
/// what pipelining `MSG` (docs/PROTOCOL.md, "Connection") is for.
struct BurstBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "burst",
        abstract: "Messages per second when senders post bursts of MSG without waiting for replies."
    )

    @Option(help: "Messages each sender posts in one burst.") var messages = 2000
    @Option(help: "Senders, each in its own ticket, bursting at the same time.") var senders = 1
    @Option(help: "Bursts to run (the figures are per burst).") var rounds = 3
    @Option(help: "The deskline binary to start (default: next to this one).") var deskline: String?
    @Option(help: "The server's storage.groupCommitIntervalMilliseconds (default: its config default).") var groupCommitMs: Int?

    func run() async throws {
        _ = raiseOpenFilesLimit()
        let binary = desklineBinary(deskline)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let work = NSTemporaryDirectory() + "deskline-bench-burst-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: work) }
        say("Machine: \(machineDescription())")
        let target = try await DesklineTarget.start(binary: binary, work: work, tickets: senders, watchers: 0, stormUsers: 0,
                                                    groupCommitMilliseconds: groupCommitMs)
        do {
            var connections: [LineConnection] = []
            for t in 0..<senders { connections.append(try await target.sender(t, group: group)) }
            say("\(senders) sender(s), \(messages) MSG each per burst, \(binary)")
            for round in 1...rounds {
                let start = now()
                try await withThrowingTaskGroup(of: Int.self) { tasks in
                    for (t, connection) in connections.enumerated() {
                        tasks.addTask { try await burst(connection, ticket: target.tickets[t]) }
                    }
                    var failed = 0
                    for try await errors in tasks { failed += errors }
                    let seconds = now() - start
                    let total = senders * messages
                    say("burst \(round): \(total) messages in \(format(seconds * 1000, 0)) ms: \(format(Double(total) / seconds, 0)) acknowledged/s, \(failed) errors")
                }
            }
            for connection in connections { await connection.close() }
        } catch {
            try? target.server.stop()
            throw error
        }
        try target.server.stop()
        try await group.shutdownGracefully()
    }

    /// Sends `messages` MSG lines in one write and waits for as many final replies; returns how
    /// many were errors.
    func burst(_ connection: LineConnection, ticket: Int) async throws -> Int {
        let channel = connection.channel!
        let done = channel.eventLoop.makePromise(of: Int.self)
        let count = messages
        try await channel.eventLoop.submit {
            var replies = 0, errors = 0
            connection.onLine = { line in
                let ok = line.starts(with: Array("OK ".utf8))
                guard ok || line.starts(with: Array("ERR ".utf8)) else { return }
                replies += 1
                if !ok { errors += 1 }
                if replies == count { done.succeed(errors) }
            }
            var buffer = channel.allocator.buffer(capacity: count * 32)
            for n in 0..<count { buffer.writeString("MSG #\(ticket) :burst \(n)\r\n") }
            channel.writeAndFlush(buffer, promise: nil)
        }.get()
        return try await done.futureResult.get()
    }
}
