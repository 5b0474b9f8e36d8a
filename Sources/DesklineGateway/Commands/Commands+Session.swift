import DesklineCore
import DesklineProtocol
import Logging

// Commands about the connection itself: HELP, LOGIN, ME, PING, PONG, QUIT.

extension Command {
    static let help: Command = Command(
        name: "HELP", access: .anyone, parameters: [.optionalWord("command")],
        summary: "List the commands you can use now, or show one command's usage."
    ) { (ctx: inout CommandContext) throws(DesklineError) in
        let visible = CommandTable.standard.commands.filter { $0.isAvailable(to: ctx.scope) }
        if let wanted = ctx.arguments["command"]?.uppercased() {
            guard let command = visible.first(where: { $0.name == wanted }) else {
                throw .notFound("No command '\(wanted.prefix(32))' is available to you. Type HELP for the list.")
            }
            return [
                ServerLine(.rpl, "HELP", [command.name], text: "\(command.usage) - \(command.summary)"),
                ServerLine(.ok, "HELP", [command.name], text: "End of HELP"),
            ]
        }
        let state = ctx.scope.map { "as \($0.role.rawValue)" } ?? "before LOGIN"
        return visible.map { ServerLine(.rpl, "HELP", [$0.name], text: "\($0.usage) - \($0.summary)") }
            + [ServerLine(.ok, "HELP", ["\(visible.count)"], text: "\(visible.count) commands available \(state)")]
    }

    static let login: Command = Command(
        name: "LOGIN", access: .guestOnly, parameters: [.word("email"), .text("password")],
        summary: "Log in. Use <tenant>/<email> if your email is registered with several helpdesks or your login was given to you in that form. The password may contain spaces.",
        carriesPassword: true
    ) { (ctx: inout CommandContext) throws(DesklineError) in
        let scope = try await authenticate(ctx.arguments.required("email"), password: ctx.arguments.required("password"),
                                           services: ctx.services, remoteAddress: ctx.remoteAddress, logger: ctx.logger)
        let profile = try await ctx.services.accounts.profile(scope)
        // Receive events from now on, and only then count what is waiting: an event stored in
        // between is then either counted or pushed, never neither.
        ctx.attach(scope)
        // AGENTS on the other nodes of a shared store shows the session once OK is out.
        await ctx.services.hub.presence.published()
        let unread = (try? await ctx.services.notifications.unreadCount(scope)) ?? 0
        ctx.scope = scope
        ctx.logger.info("login", metadata: ["tenant": "\(scope.tenantId)", "user": "\(scope.userId)", "role": "\(scope.role.rawValue)"])
        var lines = [ServerLine(.ok, "LOGIN", [scope.role.rawValue, scope.tenantId.rawValue, scope.userId.rawValue],
                                text: "Welcome, \(profile.user.displayName) (\(profile.tenant.name))")]
        if unread > 0 {
            lines.append(ServerLine(.event, "NOTIFICATIONS", [String(unread)],
                                    text: "You have \(unread) unread notifications. NOTIFICATIONS lists them."))
        }
        return lines
    }

    /// Checks a login under the failure limits of docs/PROTOCOL.md (per address and per account,
    /// every failure answered no sooner than `limits.loginFailureDelayMilliseconds` after it
    /// started, and logged): the one way every dialect logs in (LOGIN, IRC's PASS and SASL).
    static func authenticate(_ login: String, password: String, services: GatewayServices, remoteAddress: String,
                             logger: Logger) async throws(DesklineError) -> SessionScope {
        let started = ContinuousClock.now
        let account = LoginThrottle.accountKey(login)
        let limiter = services.loginLimiter
        if let wait = try await limiter.retryAfter(address: remoteAddress, account: account) {
            logger.notice("login throttled", metadata: ["address": "\(remoteAddress)"])
            throw .throttled(retryAfterSeconds: max(1, Int(wait.components.seconds) + 1))
        }
        do throws(DesklineError) {
            let scope = try await services.accounts.login(login, password: password)
            // Checked again once the password is known to be right: attempts that began at the
            // same moment passed the first check together, but only as many as the limits allow
            // before they failed can succeed (docs/PROTOCOL.md, "Limits").
            if let wait = try await limiter.retryAfter(address: remoteAddress, account: account) {
                logger.notice("login throttled after its check", metadata: ["address": "\(remoteAddress)"])
                throw DesklineError.throttled(retryAfterSeconds: max(1, Int(wait.components.seconds) + 1))
            }
            await limiter.succeeded(account: account)
            return scope
        } catch {
            if error == .loginFailed {
                await limiter.failed(address: remoteAddress, account: account)
                // Every failure is answered at the same time after it started, so the time of
                // the reply does not tell an unknown account from one whose hash has another cost.
                try? await Task.sleep(until: started + services.loginFailureDelay, clock: .continuous)
            }
            // The attempted login goes to the log (for audits and fail2ban-style tools), cut
            // and stripped of control characters so it cannot forge log lines.
            logger.notice("login failed", metadata: [
                "login": "\(ServerLine.clean(String(login.prefix(100))))",
                "reason": "\(error.code)",
            ])
            throw error
        }
    }

    static let me: Command = Command(
        name: "ME", access: .loggedIn, parameters: [],
        summary: "Show your profile: your account, your helpdesk and, for customers, your customer record."
    ) { (ctx: inout CommandContext) throws(DesklineError) in
        let p = try await ctx.services.accounts.profile(try ctx.requireScope())
        var fields: [(String, String)] = [
            ("tenant", p.tenant.id.rawValue), ("tenant-name", p.tenant.name),
            ("user", p.user.id.rawValue), ("name", p.user.displayName),
            ("email", p.user.email), ("role", p.user.role.rawValue),
        ]
        if let c = p.customer {
            fields += [("customer", c.id.rawValue), ("customer-name", c.name), ("phone", c.phone ?? ""),
                       ("status", c.status.rawValue)]
        }
        return fields.map { ServerLine(.rpl, "ME", [$0.0], text: $0.1) } + [ServerLine(.ok, "ME", text: "End of ME")]
    }

    static let ping: Command = Command(
        name: "PING", access: .anyone, parameters: [.optionalText("token")],
        summary: "Check the connection; the reply echoes the token."
    ) { (ctx: inout CommandContext) throws(DesklineError) in
        [ServerLine(.ok, "PING", text: ctx.arguments["token"] ?? "")]
    }

    static let pong: Command = Command(
        name: "PONG", access: .anyone, parameters: [.optionalText("token")],
        summary: "Answer the server's EVENT PING (any line does; PONG is the polite one)."
    ) { (ctx: inout CommandContext) throws(DesklineError) in
        [ServerLine(.ok, "PONG", text: ctx.arguments["token"] ?? "")]
    }

    static let quit: Command = Command(
        name: "QUIT", access: .anyone, parameters: [.optionalText("reason")],
        summary: "Close the connection."
    ) { (ctx: inout CommandContext) throws(DesklineError) in
        ctx.quit = true
        return [ServerLine(.ok, "QUIT", text: "Goodbye")]
    }
}
