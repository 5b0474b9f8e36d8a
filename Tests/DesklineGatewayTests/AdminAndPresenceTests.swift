import Testing

@Suite struct AdminAndPresenceTests {
    @Test func agentsSeeWhoIsOnlineAwayOrOffline() async throws {
        try await withServer { server in
            let amy = try await server.login("amy@acme.test")
            let ada = try await server.login("ada@acme.test")
            #expect(try await ada.command("AWAY at lunch, back 2pm") == ["OK AWAY :at lunch, back 2pm"])
            let list = try await amy.command("AGENTS")
            #expect(list == [
                #"RPL AGENTS abe@acme.test agent offline 0 Abe\sAgent :"#,
                #"RPL AGENTS ada@acme.test admin away 1 Ada\sAdmin :at lunch, back 2pm"#,
                #"RPL AGENTS amy@acme.test agent online 1 Amy\sAgent :"#,
                "OK AGENTS 3 :2 of 3 online",
            ])
            #expect(try await ada.command("BACK") == ["OK BACK :You are back"])
            #expect(try await amy.command("AGENTS")[1] == #"RPL AGENTS ada@acme.test admin online 1 Ada\sAdmin :"#)
            // Away ends with the last session.
            _ = try await ada.command("AWAY gone")
            await ada.close()
            // Once the server has seen her go (a fixed sleep was sometimes too short on a loaded
            // machine: her new session then came before the old one had gone), she is offline
            // without her away message.
            let deadline = ContinuousClock.now + .seconds(10)
            var ada1 = try await amy.command("AGENTS")[1]
            while ada1.contains(" away "), ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(20))
                ada1 = try await amy.command("AGENTS")[1]
            }
            #expect(ada1 == #"RPL AGENTS ada@acme.test admin offline 0 Ada\sAdmin :"#)
            let again = try await server.login("ada@acme.test")
            #expect(try await amy.command("AGENTS")[1] == #"RPL AGENTS ada@acme.test admin online 1 Ada\sAdmin :"#)
            for c in [amy, again] { await c.close() }
        }
    }

    @Test func adminCreatesACustomerWithALoginAndResetsItsPassword() async throws {
        try await withServer { server in
            let ada = try await server.login("ada@acme.test")
            #expect(try await ada.command(#"CUSTOMER NEW cleo@acme.test +1\s555\s0123 Cleo Customer"#)
                    == ["OK CUSTOMER NEW c3 cleo@acme.test :Customer c3 created: Cleo Customer"])
            #expect(try await ada.command("CUSTOMER NEW cleo@acme.test none Cleo Again").last
                    == "ERR CUSTOMER CONFLICT :tenant acme already has a customer with email cleo@acme.test (c3)")
            let login = try #require(try await ada.command("CUSTOMER LOGIN c3").first)
            #expect(login.hasPrefix("OK CUSTOMER LOGIN c3 u6 cleo@acme.test :Login created; the customer logs in with LOGIN acme/cleo@acme.test and the initial password: "))
            let password = String(login.split(separator: " ").last!)
            // A login an admin made answers only the tenant-qualified form.
            let bare = try await server.guest()
            #expect(try await bare.command("LOGIN cleo@acme.test \(password)").last?.hasPrefix("ERR LOGIN LOGIN_FAILED") == true)
            await bare.close()
            let cleo = try await server.login("acme/cleo@acme.test", password: password)
            #expect(try await cleo.command("ME").contains("RPL ME phone :+1 555 0123"))
            let reset = try #require(try await ada.command("CUSTOMER PASSWORD c3").first)
            #expect(reset.hasPrefix("OK CUSTOMER PASSWORD c3 cleo@acme.test :New password; the customer logs in with LOGIN acme/cleo@acme.test and: "))
            _ = try await server.login("acme/cleo@acme.test", password: String(reset.split(separator: " ").last!))
            // Only within the admin's own tenant, and only admins.
            #expect(try await ada.command("CUSTOMER LOGIN c9").last == "ERR CUSTOMER NOT_FOUND :No customer c9 in your helpdesk.")
            let gil = try await server.login("gil@globex.test")
            #expect(try await gil.command("CUSTOMER PASSWORD c3").last == "ERR CUSTOMER NOT_FOUND :No customer c3 in your helpdesk.")
            let amy = try await server.login("amy@acme.test")
            #expect(try await amy.command("CUSTOMER LOGIN c3").last == "ERR CUSTOMER FORBIDDEN :CUSTOMER is not available to the agent role. Type HELP for the commands you can use.")
            for c in [ada, cleo, gil, amy] { await c.close() }
        }
    }

    /// An admin must not learn whether an email has a login in another tenant, nor change how
    /// that login logs in, by giving the email a login in their own tenant.
    @Test func anAdminsLoginForAnotherTenantsEmailChangesNothingThereAndTellsNothing() async throws {
        try await withServer { server in
            let ada = try await server.login("ada@acme.test")
            // gus@globex.test logs in to Globex with the bare email; new@else.test has no login.
            var outcomes: [[String]] = []
            for (i, email) in ["gus@globex.test", "new@else.test"].enumerated() {
                _ = try await ada.command("CUSTOMER NEW \(email) none Probe \(i)")
                let created = try #require(try await ada.command("CUSTOMER LOGIN c\(3 + i)").first)
                #expect(created.contains(":Login created; the customer logs in with LOGIN acme/\(email) and"))
                let password = String(created.split(separator: " ").last!)
                let probe = try await server.guest()
                outcomes.append(try await probe.command("LOGIN \(email) \(password)"))
                await probe.close()
                await (try await server.login("acme/\(email)", password: password)).close()
            }
            // The same answer whether the email is used elsewhere or not ...
            #expect(outcomes[0] == outcomes[1])
            #expect(outcomes[0].last?.hasPrefix("ERR LOGIN LOGIN_FAILED") == true)
            // ... and Gus still logs in to Globex with the bare email.
            await (try await server.login("gus@globex.test")).close()
            // Resetting the password of a login that answered the bare email (Ann's, made by
            // the operator) makes it tenant-qualified too: else the admin could try the bare
            // LOGIN with the new password, which works only if no other tenant has the email.
            let reset = try #require(try await ada.command("CUSTOMER PASSWORD c1").first)
            #expect(reset.hasPrefix("OK CUSTOMER PASSWORD c1 ann@acme.test :New password; the customer logs in with LOGIN acme/ann@acme.test and: "))
            let password = String(reset.split(separator: " ").last!)
            let probe = try await server.guest()
            #expect(try await probe.command("LOGIN ann@acme.test \(password)") == outcomes[0])
            await probe.close()
            await (try await server.login("acme/ann@acme.test", password: password)).close()
            await ada.close()
        }
    }
}
