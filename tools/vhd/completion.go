package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/pflag"
)

var completionCmd = &command{
	name:    "completion",
	args:    "bash|zsh|fish",
	summary: "print a shell completion script for vhd",
	doc: `Prints the completion script of a shell, made from the same command and
flag definitions as 'vhd help': commands, their flags (with their
descriptions where the shell shows them), the fixed words some commands
take first (vhd undo commit, vhd help COMMAND), and file names for the
rest. To use it:

  bash   source <(vhd completion bash)       (in ~/.bashrc; or save it
         to /etc/bash_completion.d/vhd)
  zsh    source <(vhd completion zsh)        (in ~/.zshrc, after
         compinit; or save it as _vhd in a folder of $fpath)
  fish   vhd completion fish > ~/.config/fish/completions/vhd.fish`,
	setup: func(fs *pflag.FlagSet) runFunc {
		return func(ctx context.Context, e *env, args []string) error {
			if err := wantArgs(args, "SHELL (bash, zsh or fish)"); err != nil {
				return err
			}
			gen, ok := map[string]func(io.Writer, []cliCommand){
				"bash": writeBashCompletion, "zsh": writeZshCompletion, "fish": writeFishCompletion,
			}[args[0]]
			if !ok {
				return usageErr("no completion for %q: bash, zsh or fish", args[0])
			}
			gen(e.stdout, cliModel())
			return nil
		}
	},
}

// flagWords lists a command's flags as the shell types them.
func flagWords(c cliCommand) string {
	var w []string
	for _, f := range c.flags {
		w = append(w, "--"+f.long)
		if f.short != "" {
			w = append(w, "-"+f.short)
		}
	}
	return strings.Join(w, " ")
}

// valueFlags lists the flags that take a value, for the shell to leave
// their value to file completion rather than offer commands or verbs.
func valueFlags(c cliCommand) string {
	var w []string
	for _, f := range c.flags {
		if f.takesValue() {
			w = append(w, "--"+f.long)
			if f.short != "" {
				w = append(w, "-"+f.short)
			}
		}
	}
	return strings.Join(w, " ")
}

func commandNames(model []cliCommand) string {
	var n []string
	for _, c := range model {
		n = append(n, c.cmd.name)
	}
	return strings.Join(n, " ")
}

func writeBashCompletion(w io.Writer, model []cliCommand) {
	fmt.Fprintf(w, `# bash completion for vhd (vhd completion bash)
_vhd() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
    local cmd= i nargs=0
    for ((i = 1; i < COMP_CWORD; i++)); do
        case ${COMP_WORDS[i]} in
        -*) ;;
        *) if [[ -z $cmd ]]; then cmd=${COMP_WORDS[i]}; else nargs=$((nargs + 1)); fi ;;
        esac
    done
    if [[ -z $cmd ]]; then
        COMPREPLY=($(compgen -W "%s" -- "$cur"))
        return
    fi
    local flags= verbs= values=
    case $cmd in
`, commandNames(model))
	for _, c := range model {
		fmt.Fprintf(w, "    %s) flags=%q verbs=%q values=%q ;;\n", c.cmd.name, flagWords(c), strings.Join(c.verbs, " "), valueFlags(c))
	}
	fmt.Fprint(w, `    *) return ;;
    esac
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$flags" -- "$cur"))
    elif [[ -n $prev && " $values " == *" $prev "* ]]; then
        COMPREPLY=()
    elif [[ -n $verbs && $nargs -eq 0 ]]; then
        COMPREPLY=($(compgen -W "$verbs" -- "$cur"))
    fi
}
complete -o default -o bashdefault -F _vhd vhd
`)
}

// zshQuote makes s safe inside a single-quoted zsh word that _arguments
// or _describe reads: quotes, and the brackets and colons they parse.
func zshQuote(s string) string {
	s = strings.ReplaceAll(s, `\`, `\\`)
	for _, c := range []string{"[", "]", ":"} {
		s = strings.ReplaceAll(s, c, `\`+c)
	}
	return strings.ReplaceAll(s, "'", `'\''`)
}

func writeZshCompletion(w io.Writer, model []cliCommand) {
	fmt.Fprint(w, "#compdef vhd\n# zsh completion for vhd (vhd completion zsh)\n_vhd() {\n    local -a commands\n    commands=(\n")
	for _, c := range model {
		fmt.Fprintf(w, "        '%s:%s'\n", c.cmd.name, zshQuote(c.cmd.summary))
	}
	fmt.Fprint(w, "    )\n    if (( CURRENT == 2 )); then\n        _describe -t commands 'vhd command' commands\n        return\n    fi\n    words=(\"${(@)words[2,-1]}\")\n    (( CURRENT-- ))\n    case $words[1] in\n")
	for _, c := range model {
		fmt.Fprintf(w, "    %s)\n        _arguments -s \\\n", c.cmd.name)
		for _, f := range c.flags {
			fmt.Fprintf(w, "            %s \\\n", zshFlagSpec(f))
		}
		if len(c.verbs) > 0 {
			fmt.Fprintf(w, "            '1:%s:(%s)' \\\n", c.cmd.name, strings.Join(c.verbs, " "))
		}
		fmt.Fprint(w, "            '*:file:_files'\n        ;;\n")
	}
	fmt.Fprint(w, "    esac\n}\nif [[ $funcstack[1] == _vhd ]]; then _vhd \"$@\"; else compdef _vhd vhd; fi\n")
}

func zshFlagSpec(f cliFlag) string {
	desc := "[" + zshQuote(f.usage) + "]"
	arg := ""
	if f.takesValue() {
		arg = ":" + zshQuote(strings.ToLower(f.valueName)) + ":_files"
	}
	if f.short == "" {
		eq := ""
		if f.takesValue() {
			eq = "="
		}
		return "'--" + f.long + eq + desc + arg + "'"
	}
	return "'(-" + f.short + " --" + f.long + ")'{-" + f.short + ",--" + f.long + "}'" + desc + arg + "'"
}

// fishQuote makes s one single-quoted fish word.
func fishQuote(s string) string {
	s = strings.ReplaceAll(s, `\`, `\\`)
	return "'" + strings.ReplaceAll(s, "'", `\'`) + "'"
}

func writeFishCompletion(w io.Writer, model []cliCommand) {
	fmt.Fprint(w, "# fish completion for vhd (vhd completion fish)\ncomplete -c vhd -e\n")
	for _, c := range model {
		fmt.Fprintf(w, "complete -c vhd -f -n __fish_use_subcommand -a %s -d %s\n", c.cmd.name, fishQuote(c.cmd.summary))
	}
	for _, c := range model {
		cond := fishQuote("__fish_seen_subcommand_from " + c.cmd.name)
		for _, f := range c.flags {
			spec := "-l " + f.long
			if f.short != "" {
				spec += " -s " + f.short
			}
			if f.takesValue() {
				spec += " -r"
			}
			fmt.Fprintf(w, "complete -c vhd -n %s %s -d %s\n", cond, spec, fishQuote(f.usage))
		}
		for _, v := range c.verbs {
			fmt.Fprintf(w, "complete -c vhd -n %s -a %s\n", cond, v)
		}
	}
}
