# SPDX-License-Identifier: MIT
# hdr2man.awk: a section 3 man page from one public header, so that the
# pages say what the header comments say and cannot drift from them.
#
#   awk -v version=0.1.0 -v date=2026-11-25 -f hdr2man.awk include/await/queue.h
#
# With -v links=DIR it writes instead, for each public function and
# function-like macro of the synopsis, a page DIR/NAME.3 holding only
# ".so man3/aw_queue.3", so that `man aw_queue_put` opens the module's
# page, and prints the names, one a line.
#
# The header's first comment names the module; a "---- title ----" comment
# starts a subsection; every other comment becomes a paragraph followed by
# the declarations it documents (indented comment lines are examples, set
# as code).  Declarations and macros whose names hold "__" are the
# library's own and are left out, with the comment in front of them.

function esc(s) {
    gsub(/\\/, "\\e", s)
    if (s ~ /^[.']/)
        s = "\\&" s
    return s
}

function out(s) {
    body[nbody++] = s
}

# Strip the comment markers from one line of a comment.
function comment_text(s) {
    sub(/^[ \t]*\/\*+[ \t]?/, "", s)
    sub(/[ \t]*\*+\/[ \t]*$/, "", s)
    sub(/^[ \t]*\*[ \t]?/, "", s)
    return s
}

# The pending comment as a paragraph: prose is filled, indented lines are
# an example.
function flush_comment(   i, line, code, first) {
    if (ncom == 0)
        return
    out(".PP")
    code = 0
    first = 1
    for (i = 0; i < ncom; i++) {
        line = com[i]
        if (line ~ /^    /) {
            if (!code) {
                out(".RS")
                out(".nf")
                code = 1
            }
            sub(/^    /, "", line)
            out(esc(line))
            continue
        }
        if (code) {
            out(".fi")
            out(".RE")
            code = 0
        }
        if (line ~ /^[ \t]*$/) {
            out(".PP")
            continue
        }
        line = esc(line)
        if (first && match(line, /^[A-Za-z_][A-Za-z_0-9]*(\(\))? \\?- /)) {
            # "name - what it does": the name in bold
            split(line, w, " ")
            line = "\\fB" w[1] "\\fR" substr(line, length(w[1]) + 1)
        }
        first = 0
        out(line)
    }
    if (code) {
        out(".fi")
        out(".RE")
    }
    ncom = 0
}

function emit_decl(   i, text) {
    text = ""
    for (i = 0; i < ndecl; i++)
        text = text decl[i] "\n"
    if (text ~ /[Aa][Ww]_?[A-Za-z]*__/) {
        ncom = 0 # internal: its comment goes too
    } else {
        flush_comment()
        out(".PP")
        out(".nf")
        out(".ft B")
        for (i = 0; i < ndecl; i++)
            out(esc(decl[i]))
        # The synopsis lists the functions, function types and macros.
        if (text ~ /^#define / || (text ~ /\(/ && text !~ /\{/)) {
            for (i = 0; i < ndecl; i++)
                syn[nsyn++] = decl[i]
            # The names a link page is made for: functions and macros
            # with parameters, not function types.
            if (text !~ /^typedef/ &&
                match(text, /[A-Za-z_][A-Za-z_0-9]*\(/))
                names[nnames++] = substr(text, RSTART, RLENGTH - 1)
        }
        out(".ft R")
        out(".fi")
    }
    ndecl = 0
    depth = 0
}

BEGIN {
    page = FILENAME
    nbody = nsyn = ncom = ndecl = depth = nnames = 0
    incomment = indefine = 0
    title = ""
}

FNR == 1 {
    page = FILENAME
    sub(/.*\//, "", page)
    sub(/\.h$/, "", page)
    header = "await/" page ".h"
    page = "aw_" page
}

indefine {
    if (errmap && match($0, /XX\([A-Z_]+, -?[0-9]+, ".*"\)/)) {
        # The error table: XX(NAME, value, "text")
        e = substr($0, RSTART + 3, RLENGTH - 4)
        split(e, part, ", ")
        t = substr(e, index(e, "\"") + 1)
        sub(/"$/, "", t)
        out(".TP")
        out("\\fBAW_E" part[1] "\\fR (" part[2] ")")
        out(esc(t))
    }
    if ($0 !~ /\\$/)
        indefine = errmap = 0
    next
}

incomment {
    if ($0 ~ /\*\//) {
        incomment = 0
        line = comment_text($0)
        if (line != "")
            com[ncom++] = line
        if (title == "")
            take_title()
    } else {
        com[ncom++] = comment_text($0)
    }
    next
}

function take_title(   i, t) {
    t = ""
    for (i = 0; i < ncom; i++)
        t = t (i ? " " : "") com[i]
    sub(/^await\/[a-z]+\.h: */, "", t)
    title = t
    ncom = 0
}

# The licence line is not documentation.
/^\/\* SPDX-License-Identifier: .* \*\/$/ { next }

# A subsection.
/^\/\* ---- .* -+ \*\/$/ {
    flush_comment()
    t = $0
    sub(/^\/\* ---- /, "", t)
    sub(/ -+ \*\/$/, "", t)
    out(".SS " esc(t))
    next
}

/^[ \t]*\/\*/ {
    if (ndecl > 0 && depth == 0)
        emit_decl()
    if ($0 ~ /\*\//) {
        com[ncom++] = comment_text($0)
        if (title == "")
            take_title()
    } else {
        incomment = 1
        line = comment_text($0)
        if (line != "")
            com[ncom++] = line
    }
    next
}

# A public macro: its name and parameters, not its body.
/^#define AW_ERRNO_MAP/ {
    flush_comment()
    indefine = errmap = 1
    next
}

/^#define AW_[A-Z_]*(\(|[ \t]|$)/ && $2 !~ /^AW__/ && $2 != "AW_EXTERN" {
    match($0, /^#define [A-Za-z_0-9]+(\([^)]*\))?/)
    if ($0 ~ /\\$/)
        indefine = 1
    decl[ndecl++] = substr($0, 1, RLENGTH)
    emit_decl()
    next
}

/^#/ {
    if ($0 ~ /\\$/)
        indefine = 1
    next
}

/^extern "C" \{$/ || /^}$/ {
    next
}

/^[ \t]*$/ {
    if (ndecl > 0 && depth == 0)
        emit_decl()
    flush_comment()
    next
}

# A compiler attribute inside a declaration is left out.
ndecl > 0 && /^[ \t]*__attribute__/ {
    next
}

ndecl > 0 && /^[ \t]*;[ \t]*$/ {
    decl[ndecl - 1] = decl[ndecl - 1] ";"
    emit_decl()
    next
}

{
    line = $0
    if (ndecl == 0)
        unindent = sub(/^AW_EXTERN /, "", line)
    else if (unindent) # continuation lines lined up after AW_EXTERN
        sub(/^          /, "", line)
    decl[ndecl++] = line
    depth += gsub(/\{/, "{", line) - gsub(/\}/, "}", line)
    if (depth == 0 && $0 ~ /;[ \t]*$/)
        emit_decl()
}

END {
    if (ndecl > 0)
        emit_decl()
    flush_comment()
    if (links != "") {
        for (i = 0; i < nnames; i++) {
            file = links "/" names[i] ".3"
            print ".so man3/" page ".3" > file
            close(file)
            print names[i]
        }
        exit 0
    }
    print ".\\\" SPDX-License-Identifier: MIT"
    printf ".TH %s 3 %s \"libawait %s\" \"Library Functions Manual\"\n", \
        toupper(page), date, version
    print ".SH NAME"
    print page " \\- " esc(title)
    print ".SH SYNOPSIS"
    print ".nf"
    print ".ft B"
    print "#include <" header ">"
    print ""
    for (i = 0; i < nsyn; i++)
        print esc(syn[i])
    print ".ft R"
    print ".fi"
    print ".SH DESCRIPTION"
    print "This page is made from the comments of"
    print ".IR <" header "> ,"
    print "which are the reference."
    for (i = 0; i < nbody; i++)
        print body[i]
    print ".SH SEE ALSO"
    n = split("core loop future task sync queue transport stream executor process udp tls", mods, " ")
    printf ".BR libawait (7),\n.BR libawait (3)"
    for (i = 1; i <= n; i++)
        if ("aw_" mods[i] != page)
            printf ",\n.BR aw_%s (3)", mods[i]
    print ""
}
