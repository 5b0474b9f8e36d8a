/// Flood control for one session: a burst of commands, then a steady rate. A command that finds
/// the bucket empty waits for its token (the session stops reading meanwhile, so TCP slows the
/// client down); nothing is refused, and a bot that waits for each reply never waits here.
struct TokenBucket {
    let capacity: Double
    let ratePerSecond: Double
    private var tokens: Double
    private var last: ContinuousClock.Instant

    init(burst: Int, ratePerSecond: Double, now: ContinuousClock.Instant) {
        self.capacity = Double(burst)
        self.ratePerSecond = ratePerSecond
        self.tokens = Double(burst)
        self.last = now
    }

    /// Takes a token; returns how long to wait first (zero if one was there).
    mutating func take(now: ContinuousClock.Instant) -> Duration {
        let elapsed = now - last
        last = now
        let seconds = elapsed.inSeconds
        tokens = min(capacity, tokens + seconds * ratePerSecond)
        tokens -= 1
        guard tokens < 0 else { return .zero }
        return .seconds(-tokens / ratePerSecond)
    }
}
