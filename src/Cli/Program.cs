using Sandbox.Audited.Cli;

return await CliApp.RunAsync(args, Console.Out, Console.Error);
