import DesklineGateway
import Foundation
import NIOCore
import NIOPosix

/// Monotonic nanoseconds (the same clock in senders and watchers: one process).
@inline(__always) func nanos() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
}

/// Latencies in a fixed log-linear histogram: 1 µs resolution below 1 ms, then 64 sub-buckets
/// per power of two (under 1.6 % error). Cheap to record and to merge.
struct Histogram {
    private static let linear = 1000
    private static let subBuckets = 64
    private var counts = [Int](repeating: 0, count: linear + 40 * subBuckets)
    private(set) var total = 0
    private(set) var maxMicros = 0

    mutating func record(seconds: Double) { record(micros: Int(seconds * 1e6)) }

    mutating func record(micros: Int) {
        let value = max(0, micros)
        counts[Self.index(value)] += 1
        total += 1
        if value > maxMicros { maxMicros = value }
    }

    private static func index(_ micros: Int) -> Int {
        if micros < linear { return micros }
        let ratio = Double(micros) / Double(linear)
        let octave = Int(log2(ratio))
        let within = Int((ratio / pow(2, Double(octave)) - 1) * Double(subBuckets))
        return min(linear + octave * subBuckets + min(within, subBuckets - 1), linear + 40 * subBuckets - 1)
    }

    private static func value(_ index: Int) -> Double {
        if index < linear { return Double(index) }
        let octave = (index - linear) / subBuckets, within = (index - linear) % subBuckets
        return Double(linear) * pow(2, Double(octave)) * (1 + (Double(within) + 0.5) / Double(subBuckets))
    }

    mutating func merge(_ other: Histogram) {
        for i in counts.indices { counts[i] += other.counts[i] }
        total += other.total
        maxMicros = max(maxMicros, other.maxMicros)
    }

    /// The q-quantile in milliseconds.
    func ms(_ q: Double) -> Double {
        guard total > 0 else { return .nan }
        if q >= 1 { return Double(maxMicros) / 1000 }
        let rank = Int((q * Double(total)).rounded(.up))
        var seen = 0
        for (i, c) in counts.enumerated() where c > 0 {
            seen += c
            if seen >= rank { return Self.value(i) / 1000 }
        }
        return Double(maxMicros) / 1000
    }
}

/// What one event loop measured; touched only on that loop.
final class LoopStats: @unchecked Sendable {
    var latency = Histogram()
    var received = 0
    var errors = 0

    func reset() {
        latency = Histogram()
        received = 0
        errors = 0
    }
}

/// One client connection speaking a line protocol. Setup steps wait for a reply line
/// (`expect`); during a measurement every line goes to `onLine` without becoming a String.
final class LineConnection: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer

    private(set) var channel: Channel!
    private var pending: ByteBuffer?
    private var waiters: [(match: @Sendable (String) -> Bool, promise: EventLoopPromise<[String]>)] = []
    /// The lines the first waiter has seen so far.
    private var collected: [String] = []
    /// Called on the event loop for each line while nobody waits for a reply.
    var onLine: ((ByteBufferView) -> Void)?
    /// Answers keepalives (IRC `PING :x`, Deskline `EVENT PING :x`) so idle clients stay.
    private let answerPings: Bool

    init(answerPings: Bool = true) { self.answerPings = answerPings }

    static func connect(_ group: EventLoopGroup, port: Int, host: String = "127.0.0.1", answerPings: Bool = true) async throws -> LineConnection {
        let handler = LineConnection(answerPings: answerPings)
        let channel = try await ClientBootstrap(group: group)
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(handler) } }
            .connect(host: host, port: port).get()
        handler.channel = channel
        return handler
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if pending == nil { pending = incoming } else { pending!.writeBuffer(&incoming) }
        // Find line ends with memchr over the raw bytes: the generator must stay cheaper than the
        // servers it measures.
        while true {
            let found = pending!.withUnsafeReadableBytes { raw -> Int? in
                guard let base = raw.baseAddress, raw.count > 0, let hit = memchr(base, 0x0A, raw.count) else { return nil }
                return UnsafeRawPointer(hit) - base
            }
            guard let offset = found else { break }
            let start = pending!.readerIndex
            var length = offset
            if length > 0, pending!.getInteger(at: start + length - 1, as: UInt8.self) == 0x0D { length -= 1 }
            let view = pending!.viewBytes(at: start, length: length)!
            pending!.moveReaderIndex(forwardBy: offset + 1)
            handle(view, context: context)
        }
        if pending!.readableBytes == 0 { pending = nil } else if pending!.readerIndex > 65536 { pending!.discardReadBytes() }
    }

    private func handle(_ line: ByteBufferView, context: ChannelHandlerContext) {
        if answerPings, let pong = Self.pong(for: line) {
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: pong)), promise: nil)
            return
        }
        if !waiters.isEmpty {
            let text = String(decoding: line, as: UTF8.self)
            collected.append(text)
            if waiters[0].match(text) {
                waiters.removeFirst().promise.succeed(collected)
                collected = []
            }
            return
        }
        onLine?(line)
    }

    private static let ircPing = Array("PING ".utf8), desklinePing = Array("EVENT PING ".utf8)

    private static func pong(for line: ByteBufferView) -> String? {
        if line.starts(with: ircPing) { return "PONG " + String(decoding: line.dropFirst(5), as: UTF8.self) + "\r\n" }
        if line.starts(with: desklinePing) { return "PONG " + String(decoding: line.dropFirst(11), as: UTF8.self) + "\r\n" }
        return nil
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        for waiter in waiters { waiter.promise.fail(error) }
        waiters = []
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        for waiter in waiters { waiter.promise.fail(BenchError("connection closed")) }
        waiters = []
    }

    typealias OutboundOut = ByteBuffer

    /// Sends a line and returns the lines that arrive up to and including the first one `match`
    /// accepts.
    func request(_ line: String?, until match: @escaping @Sendable (String) -> Bool) async throws -> [String] {
        let promise = channel.eventLoop.makePromise(of: [String].self)
        channel.eventLoop.execute {
            self.waiters.append((match, promise))
            if let line { self.channel.writeAndFlush(ByteBuffer(string: line + "\r\n"), promise: nil) }
        }
        return try await promise.futureResult.get()
    }

    /// Sends a Deskline command and returns every line of its reply (the last is `OK ...` or
    /// `ERR ...`).
    func reply(_ line: String) async throws -> [String] {
        try await request(line) { $0.hasPrefix("OK ") || $0.hasPrefix("ERR ") }
    }

    /// Sends a Deskline command and returns its final line (`OK ...` or `ERR ...`).
    func command(_ line: String) async throws -> String {
        try await reply(line).last!
    }

    func close() async {
        try? await channel.close()
    }
}

/// Parses the number after `marker` in a line (the send time stamped in a message).
@inline(__always) func number(after marker: [UInt8], in line: ByteBufferView) -> Int64? {
    line.withUnsafeBytes { raw -> Int64? in
        guard let base = raw.baseAddress, raw.count >= marker.count else { return nil }
        // memchr for the marker's first byte, then compare the rest.
        var from = 0
        var start: Int?
        while from <= raw.count - marker.count, let hit = memchr(base + from, Int32(marker[0]), raw.count - marker.count + 1 - from) {
            let at = UnsafeRawPointer(hit) - base
            if memcmp(base + at, marker, marker.count) == 0 {
                start = at
                break
            }
            from = at + 1
        }
        guard let start else { return nil }
        var index = start + marker.count
        var value: Int64 = 0
        var digits = 0
        while index < raw.count, raw[index] >= 0x30, raw[index] <= 0x39 {
            value = value * 10 + Int64(raw[index] - 0x30)
            index += 1
            digits += 1
        }
        return digits > 0 ? value : nil
    }
}

/// Raises the open-files limit as far as allowed (10,000 sessions need more than the usual 1,024).
func raiseOpenFilesLimit() -> Int {
    Int(clamping: OpenFilesLimit.raiseToHardLimit() ?? 0)
}

/// The deskline binary to start: the one given, else the one next to this benchmark.
func desklineBinary(_ given: String?) -> String {
    given ?? URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("deskline").path
}
