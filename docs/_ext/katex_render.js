// Renders TeX to HTML with KaTeX for docs/_ext/katex.py: reads a JSON list of
// [tex, displayMode] pairs on stdin, writes the list of HTML strings on stdout.
// A formula KaTeX cannot parse stops the build, naming the formula.
const katex = require(process.argv[2]);

let input = "";
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  const rendered = JSON.parse(input).map(([tex, displayMode]) => {
    try {
      return katex.renderToString(tex, { displayMode, throwOnError: true, strict: "error" });
    } catch (error) {
      process.stderr.write(`KaTeX cannot render ${JSON.stringify(tex)}: ${error.message}\n`);
      process.exit(1);
    }
  });
  process.stdout.write(JSON.stringify(rendered));
});
