import NIOCore
import NIOExtras
import NIOPosix
import NIOSSL

struct TestClientTimeout: Error, CustomStringConvertible {
    var waitingFor: String
    var description: String { "timed out waiting for \(waitingFor)" }
}

/// A line client over a real TCP socket, as a bot would write one. Used from one test task.
final class TestClient {
    private let channel: any Channel
    private let writer: NIOAsyncChannelOutboundWriter<ByteBuffer>
    private var lines: AsyncStream<String>.Iterator
    private let lineSink: AsyncStream<String>.Continuation
    /// Reads until the connection ends; its value is the error that ended it, if any.
    private let reader: Task<(any Error)?, Never>
    private var timeoutCounter = 0
    private static let timeoutMarker = "\u{0}timeout "

    private init(channel: any Channel, writer: NIOAsyncChannelOutboundWriter<ByteBuffer>,
                 lines: AsyncStream<String>, sink: AsyncStream<String>.Continuation, reader: Task<(any Error)?, Never>) {
        self.channel = channel
        self.writer = writer
        self.lines = lines.makeAsyncIterator()
        self.lineSink = sink
        self.reader = reader
    }

    /// Connects; with `tls`, speaks TLS to the server named `localhost`.
    static func connect(port: Int, host: String = "127.0.0.1", tls: NIOSSLContext? = nil) async throws -> TestClient {
        let async = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: tls, serverHostname: "localhost"))
                    }
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(LineBasedFrameDecoder()))
                    return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(
                        wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
                }
            }
        let (stream, sink) = AsyncStream.makeStream(of: String.self)
        let (writers, handOver) = AsyncStream.makeStream(of: NIOAsyncChannelOutboundWriter<ByteBuffer>.self)
        let reader = Task<(any Error)?, Never> {
            defer {
                sink.finish()
                handOver.finish()
            }
            do {
                try await async.executeThenClose { inbound, outbound in
                    handOver.yield(outbound)
                    for try await buffer in inbound { sink.yield(String(buffer: buffer)) }
                }
                return nil
            } catch {
                return error
            }
        }
        var handedOver = writers.makeAsyncIterator()
        guard let writer = await handedOver.next() else { throw ChannelError.ioOnClosedChannel }
        return TestClient(channel: async.channel, writer: writer, lines: stream, sink: sink, reader: reader)
    }

    /// Waits until the connection has ended; the error that ended it (a failed TLS handshake,
    /// say), or nil for an orderly close.
    func endingError() async -> (any Error)? {
        await reader.value
    }

    /// Sends one line (CRLF is added).
    func send(_ line: String) async throws {
        try await writer.write(ByteBuffer(string: line + "\r\n"))
    }

    /// Sends raw bytes as they are.
    func sendRaw(_ bytes: [UInt8]) async throws {
        try await writer.write(ByteBuffer(bytes: bytes))
    }

    /// The next line, or nil once the server has closed the connection.
    func readLine(timeout: Duration = .seconds(10)) async throws -> String? {
        timeoutCounter += 1
        let marker = Self.timeoutMarker + String(timeoutCounter)
        let sink = lineSink
        let timer = Task {
            try await Task.sleep(for: timeout)
            sink.yield(marker)
        }
        defer { timer.cancel() }
        while let line = await lines.next() {
            if line.hasPrefix(Self.timeoutMarker) {
                if line == marker { throw TestClientTimeout(waitingFor: "a line") }
                continue
            }
            return line
        }
        return nil
    }

    /// Lines up to and including the terminal `OK`/`ERR` (optionally labelled) line.
    func readReply(timeout: Duration = .seconds(10)) async throws -> [String] {
        var reply: [String] = []
        while let line = try await readLine(timeout: timeout) {
            reply.append(line)
            if Self.isTerminal(line) { return reply }
        }
        throw TestClientTimeout(waitingFor: "a terminal line after \(reply)")
    }

    /// Sends `line` and returns its whole reply.
    func command(_ line: String) async throws -> [String] {
        try await send(line)
        return try await readReply()
    }

    /// Lines the server sends within `window` (events arriving on their own).
    func drain(for window: Duration = .milliseconds(300)) async throws -> [String] {
        var lines: [String] = []
        let deadline = ContinuousClock.now + window
        while ContinuousClock.now < deadline {
            do {
                guard let line = try await readLine(timeout: deadline - ContinuousClock.now) else { break }
                lines.append(line)
            } catch is TestClientTimeout {
                break
            }
        }
        return lines
    }

    /// The next line that starts with `prefix`, skipping others (up to `timeout`).
    func expectLine(startingWith prefix: String, timeout: Duration = .seconds(10)) async throws -> String {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            guard let line = try await readLine(timeout: deadline - ContinuousClock.now) else { break }
            if line.hasPrefix(prefix) { return line }
        }
        throw TestClientTimeout(waitingFor: "a line starting with \(prefix)")
    }

    /// Reads until the server closes; returns what it sent before closing.
    func readUntilClosed(timeout: Duration = .seconds(10)) async throws -> [String] {
        var rest: [String] = []
        while let line = try await readLine(timeout: timeout) { rest.append(line) }
        return rest
    }

    /// Half-closes: no more input from this client (what `nc -N` does at end of input).
    func finishSending() async {
        writer.finish()
    }

    func close() async {
        try? await channel.close()
    }

    static func isTerminal(_ line: String) -> Bool {
        var words = line.split(separator: " ", maxSplits: 2).map(String.init)
        if words.first?.hasPrefix("@") == true { words.removeFirst() }
        return words.first == "OK" || words.first == "ERR"
    }
}
